# gdb support for braid programs: lists tasks and prints the backtrace of a
# suspended task, in a live process or in a core file.
#
#   (gdb) source /usr/local/share/braid/gdb/braid.py
#   (gdb) info braid-tasks
#   (gdb) braid-bt 42
#
# The program (and libbraid) must have debug information: gdb reads the
# runtime's own structures, starting from the list of live runtimes,
# braid__runtimes (src/debug.c).  A suspended task's backtrace follows the
# frame pointers from the registers its context switch saved on its stack
# (src/arch/*.S), so frames of code built without frame pointers are
# skipped; libbraid itself is always built with them.
#
# When libbraid.so is used, `make install` also puts this file where gdb's
# auto-load looks for it (libbraid.so.VERSION-gdb.py under
# $(PREFIX)/share/gdb/auto-load), so it loads by itself once that directory
# is in gdb's auto-load safe-path.

import gdb

# struct braid__task: wake word states, kinds (src/task.h).
WAKE_PARKED = 1
WAKE_NOTIFIED = 2
KIND_CALL = 1
MAX_TASKS = 1000000


def _int(v):
    return int(v.cast(gdb.lookup_type("unsigned long")))


def _fields(typename):
    try:
        return {f.name for f in gdb.lookup_type(typename).strip_typedefs().fields()}
    except gdb.error:
        return set()


def _wait_reasons():
    try:
        t = gdb.lookup_type("enum braid__wait_reason")
    except gdb.error:
        return {}
    names = {}
    for f in t.fields():
        names[int(f.enumval)] = f.name.replace("BRAID_WAIT_", "").lower()
    return names


def _runtimes():
    try:
        rt = gdb.parse_and_eval("braid__runtimes")
    except gdb.error:
        raise gdb.GdbError("no braid runtime found: the program is not linked with "
                           "libbraid, or has no debug information")
    found, seen = [], set()
    while _int(rt) and _int(rt) not in seen:
        seen.add(_int(rt))
        found.append(rt)
        rt = rt["reg_next"]
    # The list is newest first: number the runtimes in creation order.
    return reversed(found)


def _tasks():
    """(runtime number, worker, task) for every started task."""
    count = 0
    for n, rt in enumerate(_runtimes()):
        workers = rt["workers"]
        for i in range(int(rt["nworkers"])):
            w = workers[i]
            t = w["live"]
            seen = set()
            while _int(t) and _int(t) not in seen and count < MAX_TASKS:
                seen.add(_int(t))
                count += 1
                yield n, w, t
                t = t["live_next"]


def _running():
    """Task address -> (gdb thread number, worker index): the task each
    thread is running, read from its braid__tls_task."""
    running = {}
    inferior = gdb.selected_inferior()
    if inferior.pid == 0 and not inferior.threads():
        return running
    selected = gdb.selected_thread()
    frame = None
    try:
        frame = gdb.selected_frame()
    except gdb.error:
        pass
    try:
        for th in inferior.threads():
            try:
                th.switch()
                t = gdb.parse_and_eval("braid__tls_task")
                if _int(t):
                    running[_int(t)] = th.num
            except gdb.error:
                continue  # no TLS access (no libthread_db): states say so
    finally:
        if selected is not None:
            selected.switch()
            if frame is not None:
                try:
                    frame.select()
                except gdb.error:
                    pass
    return running


def _name(t):
    ext = t["ext"]
    if not _int(ext):
        return ""
    try:
        return ext["name"].string(length=-1).split("\0")[0]
    except (gdb.error, UnicodeDecodeError):
        return "?"


def _waiting_on(t, reason, fields):
    """What a waiting task waits for, when this libbraid records it
    (struct braid__task's wait_obj: a joined task's id, a descriptor)."""
    if "wait_obj" not in fields or not int(t["wait_obj"]):
        return ""
    obj = int(t["wait_obj"])
    if reason == "join":
        return " (task %d)" % obj
    if reason == "io":
        return " (fd %d)" % obj
    return " (%d)" % obj


def _state(t, w, running, reasons, tls_ok, fields):
    wake = int(t["wake"])
    reason = int(t["wait_reason"])
    if _int(t) in running:
        s = "running on w%d (gdb thread %d)" % (int(w["index"]), running[_int(t)])
    elif wake == WAKE_PARKED:
        name = reasons.get(reason, str(reason))
        s = "waiting: %s%s" % (name, _waiting_on(t, name, fields))
    elif reasons.get(reason) == "yield":
        s = "runnable (yielded)"
    elif wake == WAKE_NOTIFIED or reason != 0:  # 0: BRAID_WAIT_NONE
        s = "runnable (woken)"
    elif tls_ok:
        s = "runnable"
    else:
        s = "running or runnable"
    if int(t["kind"]) == KIND_CALL:
        s += " [join_all call]"
    if bool(t["cancelled"]):
        s += " [cancel requested]"
    return s


def _site_layout(fields):
    """How this libbraid keeps spawn sites: "task" (site_file, site_line,
    parent fields of struct braid__task), "rec" (a braid__site beside each
    completion record, src/handle.h) or None."""
    if "site_file" in fields or "parent" in fields:
        return "task"
    try:
        return ("rec", gdb.lookup_type("braid__site").strip_typedefs())
    except gdb.error:
        return None


# BRAID_REC_CHUNK_SHIFT (src/handle.h): where a record's site is.
REC_CHUNK_SHIFT = 16


def _c_string(v):
    if not _int(v):
        return None
    try:
        return v.string()
    except (gdb.error, UnicodeDecodeError):
        return "?"


def _site(t, fields, layout):
    """(spawn site or "-", parent id or "-") of a task."""
    if layout == "task":
        where = _c_string(t["site_file"]) if "site_file" in fields else None
        if where is not None and "site_line" in fields:
            where += ":%d" % int(t["site_line"])
        parent = int(t["parent"]) if "parent" in fields else 0
    else:
        rec = t["rec"]
        if not _int(rec):  # a join_all call: its caller's site
            return "-", "-"
        site_type = layout[1]
        i = int(t["rec_index"]) & ((1 << REC_CHUNK_SHIFT) - 1)
        size = rec.dereference().type.sizeof
        addr = _int(rec) - i * size + (size << REC_CHUNK_SHIFT) + i * site_type.sizeof
        site = gdb.Value(addr).cast(site_type.pointer()).dereference()
        where = _c_string(site["file"])
        if where is not None:
            where += ":%d" % int(site["line"])
        parent = int(site["parent"])
    return where or "-", str(parent) if parent else "-"


def _find(task_id):
    found = [(n, w, t) for n, w, t in _tasks() if int(t["id"]) == task_id]
    # A join_all call shares its caller's id: the caller first.
    found.sort(key=lambda x: int(x[2]["kind"]))
    return found


class InfoBraidTasks(gdb.Command):
    """List the started tasks of every braid runtime: id, name, worker, state
(running, runnable, or waiting and for what), and, when this libbraid
records them, the parent task and the spawn site.
Usage: info braid-tasks"""

    def __init__(self):
        super(InfoBraidTasks, self).__init__("info braid-tasks", gdb.COMMAND_STATUS)

    def invoke(self, arg, from_tty):
        fields = _fields("struct braid__task")
        layout = _site_layout(fields)
        reasons = _wait_reasons()
        running = _running()
        tls_ok = bool(running)
        rows = []
        for n, w, t in sorted(_tasks(), key=lambda x: (x[0], int(x[2]["id"]), int(x[2]["kind"]))):
            row = ["%d" % int(t["id"]), _name(t) or "-", "rt%d/w%d" % (n, int(w["index"])),
                   _state(t, w, running, reasons, tls_ok, fields)]
            if layout is not None:
                where, parent = _site(t, fields, layout)
                row += [parent, where]
            rows.append(row)
        if not rows:
            print("no started braid tasks")
            return
        head = ["id", "name", "worker", "state"]
        if layout is not None:
            head += ["parent", "spawned at"]
        widths = [max(len(r[i]) for r in rows + [head]) for i in range(len(head))]
        for r in [head] + rows:
            print("  ".join(c.ljust(widths[i]) for i, c in enumerate(r)).rstrip())


def _read_ptr(addr):
    ptr = gdb.lookup_type("unsigned long").pointer()
    return int(gdb.Value(addr).cast(ptr).dereference())


def _saved_frame(sp):
    """(frame pointer, return address) saved by braid__ctx_switch."""
    arch = gdb.selected_inferior().architecture().name()
    if "x86-64" in arch or "x86_64" in arch:
        return _read_ptr(sp + 40), _read_ptr(sp + 48)  # rbp, return address
    if "aarch64" in arch:
        return _read_ptr(sp + 80), _read_ptr(sp + 88)  # x29, x30
    raise gdb.GdbError("braid-bt: no frame walk for architecture %s" % arch)


def _describe(pc):
    """'function (file:line)' for a return address."""
    look = pc - 1  # inside the call, not after it
    names = []
    try:
        block = gdb.block_for_pc(look)
    except RuntimeError:
        block = None
    while block is not None:
        if block.function is not None:
            names.append(block.function.print_name)
        block = block.superblock
    where = ""
    sal = gdb.find_pc_line(look)
    if sal.symtab is not None:
        where = " at %s:%d" % (sal.symtab.filename, sal.line)
    if not names:
        sym = gdb.execute("info symbol 0x%x" % look, to_string=True).strip()
        name = sym.split(" in section")[0] if not sym.startswith("No symbol") else "??"
        return name.replace(" + ", "+")
    # Innermost first: the functions inlined into the one that holds pc.
    text = names[0] + where
    if len(names) > 1:
        text += " [inlined into %s]" % " <- ".join(names[1:])
    return text


def _walk(t):
    """The return addresses of a suspended task, innermost first."""
    fiber = t["fiber"]
    try:
        sp = _int(fiber["ctx"]["sp"])
    except gdb.error:
        raise gdb.GdbError("braid-bt: this libbraid uses the portable (ucontext) switch")
    lo = _int(fiber["stack_lo"])
    hi = _int(t)  # the task record sits at the top of its stack
    fp, pc = _saved_frame(sp)
    pcs = [pc]
    while lo <= fp < hi and len(pcs) < 256:
        pc = _read_ptr(fp + 8)
        if not pc:
            break
        pcs.append(pc)
        nfp = _read_ptr(fp)
        if nfp <= fp:
            break
        fp = nfp
    return pcs


class BraidBt(gdb.Command):
    """Print the backtrace of a braid task, by id (see info braid-tasks).
A suspended task's frames are found from the registers saved when it
suspended; a running task's are its thread's, printed with `bt`.
Usage: braid-bt ID"""

    def __init__(self):
        super(BraidBt, self).__init__("braid-bt", gdb.COMMAND_STACK)

    def invoke(self, arg, from_tty):
        try:
            task_id = int(gdb.parse_and_eval(arg)) if arg.strip() else None
        except gdb.error:
            task_id = None
        if task_id is None:
            raise gdb.GdbError("usage: braid-bt ID")
        found = _find(task_id)
        if not found:
            raise gdb.GdbError("no started task %d (info braid-tasks lists them)" % task_id)
        running = _running()
        for n, w, t in found:
            name = _name(t)
            call = " (join_all call)" if int(t["kind"]) == KIND_CALL else ""
            print("task %d%s%s on rt%d/w%d:" % (task_id, " " + name if name else "", call, n,
                                                int(w["index"])))
            thread = running.get(_int(t))
            if thread is not None:
                print("  running on gdb thread %d; its stack:" % thread)
                self._thread_bt(thread)
                continue
            for i, pc in enumerate(_walk(t)):
                print("#%-2d 0x%016x in %s" % (i, pc, _describe(pc)))

    @staticmethod
    def _thread_bt(num):
        selected = gdb.selected_thread()
        for th in gdb.selected_inferior().threads():
            if th.num == num:
                th.switch()
                try:
                    gdb.execute("bt")
                finally:
                    selected.switch()
                return


InfoBraidTasks()
BraidBt()
