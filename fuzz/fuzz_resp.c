/* libFuzzer harness for mini_redis's RESP parser (fuzz/resp_check.h);
 * make fuzz runs it after the scenario fuzzer. */
#include "resp_check.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    resp_check(data, size);
    return 0;
}
