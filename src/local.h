/*
 * Per-task state that the task itself manages: task-local storage and the
 * defer stack.
 */
#ifndef BRAID_LOCAL_H
#define BRAID_LOCAL_H

#include "task.h"

#define BRAID_LOCAL_KEYS 128

typedef struct braid__local_slot {
    uint32_t key;       /* the key id the value was set under */
    void *value;
} braid__local_slot;

/* Run the destructors of t's task-local values and free them. */
void braid__local_destroy(braid__task *t);

#endif
