/* smtp_stub.c - placeholder so the module links; replaced by issue 4. */
#include "smtp.h"

int smtp_placeholder;
