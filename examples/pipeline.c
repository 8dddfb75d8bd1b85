/*
 * A pipeline: a producer feeds numbers into a bounded channel, four worker
 * tasks square them and pass the results on, and a collector adds them up.
 * Each stage ends when its input channel closes: the producer closes the
 * first channel when it is done, and the last worker to finish (the last
 * sender of the second channel) closes that one by dropping its reference.
 */
#include <braid.h>
#include <stdint.h>
#include <stdio.h>

enum { NUMBERS = 10000, WORKERS = 4 };

static braid_chan *numbers, *squares;

static void *producer(void *arg)
{
    (void)arg;
    for (uint64_t i = 1; i <= NUMBERS; i++)
        if (braid_chan_send(numbers, &i) != 0)
            break;
    braid_chan_close(numbers);
    return NULL;
}

static void *worker(void *arg)
{
    (void)arg;
    uint64_t n, done = 0;
    while (braid_chan_recv(numbers, &n) == 0) {
        uint64_t sq = n * n;
        braid_chan_send(squares, &sq);
        done++;
    }
    braid_chan_sender_drop(squares); /* the last one closes it */
    return (void *)(uintptr_t)done;
}

static void *root(void *arg)
{
    (void)arg;
    braid_chan_new(&numbers, sizeof(uint64_t), 64);
    braid_chan_new(&squares, sizeof(uint64_t), 64);
    braid_task workers[WORKERS];
    for (int i = 0; i < WORKERS; i++) {
        braid_chan_sender_dup(squares); /* one reference per worker */
        braid_spawn(&workers[i], worker, NULL);
    }
    braid_chan_sender_drop(squares); /* ours: only the workers send */
    braid_spawn(NULL, producer, NULL);

    uint64_t sum = 0, sq;
    while (braid_chan_recv(squares, &sq) == 0)
        sum += sq;
    uint64_t handled = 0;
    for (int i = 0; i < WORKERS; i++) {
        void *done;
        braid_join(workers[i], &done);
        handled += (uintptr_t)done;
    }
    printf("Sum of squares of 1..%d: %llu\n", NUMBERS, (unsigned long long)sum);
    printf("Handled by the workers: %llu\n", (unsigned long long)handled);
    braid_chan_receiver_drop(squares);
    braid_chan_sender_drop(numbers);
    braid_chan_receiver_drop(numbers);
    return NULL;
}

int main(void)
{
    int rc = braid_run(root, NULL, NULL);
    if (rc != BRAID_OK) {
        fprintf(stderr, "braid_run: %s\n", braid_strerror(rc));
        return 1;
    }
    return 0;
}
