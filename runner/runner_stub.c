/* runner_stub.c - placeholder so the module links; replaced by issue 5. */
#include "runner.h"

int runner_placeholder;
