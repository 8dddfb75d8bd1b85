/*
 * libFuzzer harness: the input bytes are a scenario (tests/scenario.h):
 * the first 8 the deterministic runtime's seed, the rest the scripts.  Each
 * input is run twice in deterministic mode and checked, under ASan+UBSan
 * (make fuzz).  A failed check aborts, and libFuzzer keeps the input;
 * replay it with build/fuzz/fuzz_scenario FILE.  tests/test_fuzz_corpus.c
 * replays the corpus in make test.
 */
#include "scenario.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    sc_replay_hint = "replay: build/fuzz/fuzz_scenario <the input libFuzzer saved>";
    sc_check_bytes(data, size);
    return 0;
}
