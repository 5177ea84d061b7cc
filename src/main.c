/* SPDX-License-Identifier: Apache-2.0 */
/* main.c - the otel2langfuse command line. */
#include <stdio.h>

int main(void)
{
    puts("otel2langfuse " O2L_VERSION);
    return 0;
}
