/* queue_stub.c - placeholder so the module links; replaced by issue 3. */
#include "queue.h"

int queue_placeholder;
