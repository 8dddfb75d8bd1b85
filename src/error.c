/*
 * Error names.  braid returns negative errno values; these messages say
 * what each one means for a braid call, and fall back to strerror's text
 * (through the thread-safe strerrordesc_np) for the rest.
 */
#include "internal.h"

#include <string.h>

const char *braid_strerror(int code)
{
    switch (code) {
    case BRAID_OK:
        return "ok (the task returned normally)";
    case BRAID_PANICKED:
        return "the task panicked";
    case BRAID_CANCELLED:
        return "the task was cancelled";
    case -EPERM:
        return "not permitted here (a task-only call from a plain thread, or a runtime call "
               "from inside a task)";
    case -ESRCH:
        return "no such task (the handle is stale, already joined or detached)";
    case -EINVAL:
        return "invalid argument (or a handle that was never valid)";
    case -EDEADLK:
        return "a task cannot join itself";
    case -ECANCELED:
        return "the calling task was cancelled";
    case -ETIMEDOUT:
        return "timed out";
    case -ENOMEM:
        return "out of memory or address space";
    case -EAGAIN:
        return "resource temporarily unavailable (no thread or key could be created, or a "
               "temporary failure of name resolution)";
    case -EBUSY:
        return "busy (another join of this handle, or a block_on, is in progress)";
    case -ENOENT:
        return "not found (no such file, host or service; or a JoinSet with no task left)";
    case -ENODATA:
        return "no data (the host name has no address of the requested kind)";
    case -EIO:
        return "input/output error (or a non-recoverable failure of name resolution)";
    case -EMSGSIZE:
        return "message too long (or a line longer than a braid_reader's buffer)";
    default:
        break;
    }
    int e = code < 0 ? -code : code;
    const char *desc = e > 0 ? strerrordesc_np(e) : NULL;
    return desc ? desc : "unknown error";
}

const char *braid_version(void)
{
    return BRAID_VERSION_STRING;
}
