/* expiry_stub.c - placeholder so the module links; replaced by issue 6. */
#include "expiry.h"

int expiry_placeholder;
