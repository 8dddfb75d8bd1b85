/*
 * One step of a call-frame unwind (see unwind.h).  The format is that of
 * .eh_frame as the System V ABI and the LSB define it (DWARF's call frame
 * information with augmentations, and the .eh_frame_hdr search table);
 * only what compilers and assemblers emit for C is understood.
 *
 * A step finds the FDE (frame description) covering the pc by binary
 * search in the module's .eh_frame_hdr table, runs its CIE's and its own
 * instructions up to the pc, which gives the row of rules for that
 * instruction: the CFA (the caller's stack pointer) as a register plus an
 * offset, and where the return address and the frame pointer were saved.
 * Only those three are tracked: they are all the next step needs.
 */
#include "unwind.h"
#include "internal.h"

#include <link.h>
#include <string.h>

#if defined(__x86_64__) || defined(__aarch64__)

/* DWARF register numbers (each ABI's DWARF mapping). */
#if defined(__x86_64__)
#define DW_FP 6u
#define DW_SP 7u
#define DW_LR UINT64_MAX /* none: the return address is always on the stack */
#else
#define DW_FP 29u
#define DW_LR 30u
#define DW_SP 31u
#endif

/* Pointer encodings (DW_EH_PE_*): the format in the low bits, what the
 * value is relative to in the next three, indirection in the top bit. */
enum {
    PE_ABSPTR = 0x00, PE_ULEB128 = 0x01, PE_UDATA2 = 0x02, PE_UDATA4 = 0x03,
    PE_UDATA8 = 0x04, PE_SLEB128 = 0x09, PE_SDATA2 = 0x0a, PE_SDATA4 = 0x0b,
    PE_SDATA8 = 0x0c, PE_PCREL = 0x10, PE_DATAREL = 0x30, PE_INDIRECT = 0x80,
    PE_OMIT = 0xff
};

/* ---- bounded reading of a module's tables ------------------------------------------ */

/* A read position and the end of the memory it may read; bad once a read
 * would have gone past it (every later read then yields 0). */
struct cfi_cur {
    const uint8_t *p, *end;
    bool bad;
};

/* A cursor at addr, which may read to the end of the module's loaded,
 * readable segment that holds addr (nothing if none does). */
static struct cfi_cur cfi_at(const struct dl_phdr_info *info, uintptr_t addr)
{
    struct cfi_cur c = { (const uint8_t *)addr, (const uint8_t *)addr, false };
    for (unsigned i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        uintptr_t lo = info->dlpi_addr + ph->p_vaddr;
        if (ph->p_type == PT_LOAD && (ph->p_flags & PF_R) && addr - lo < ph->p_memsz)
            c.end = (const uint8_t *)(lo + ph->p_memsz);
    }
    return c;
}

/* A little-endian value of size bytes (every target here is). */
static uint64_t cfi_fixed(struct cfi_cur *c, size_t size)
{
    if (c->bad || (size_t)(c->end - c->p) < size) {
        c->bad = true;
        return 0;
    }
    uint64_t v = 0;
    memcpy(&v, c->p, size);
    c->p += size;
    return v;
}

/* A LEB128 number; *last gets its last byte (its sign is bit 6), *bits
 * how many bits it held. */
static uint64_t cfi_leb(struct cfi_cur *c, uint8_t *last, unsigned *bits)
{
    uint64_t v = 0;
    for (unsigned shift = 0;; shift += 7) {
        uint8_t b = (uint8_t)cfi_fixed(c, 1);
        if (c->bad)
            return 0;
        if (shift < 64)
            v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *last = b;
            *bits = shift + 7;
            return v;
        }
    }
}

static uint64_t cfi_uleb(struct cfi_cur *c)
{
    uint8_t last;
    unsigned bits;
    return cfi_leb(c, &last, &bits);
}

static int64_t cfi_sleb(struct cfi_cur *c)
{
    uint8_t last = 0;
    unsigned bits = 0;
    uint64_t v = cfi_leb(c, &last, &bits);
    if ((last & 0x40) && bits < 64)
        v |= ~UINT64_C(0) << bits;
    return (int64_t)v;
}

/* A pointer in encoding enc; datarel is the base of data-relative values
 * (0: not expected here).  The indirection bit is the caller's business. */
static uintptr_t cfi_encoded(struct cfi_cur *c, uint8_t enc, uintptr_t datarel)
{
    uintptr_t at = (uintptr_t)c->p;
    uint64_t v;
    switch (enc & 0x0f) {
    case PE_ABSPTR:
    case PE_UDATA8:
    case PE_SDATA8:
        v = cfi_fixed(c, 8);
        break;
    case PE_ULEB128:
        v = cfi_uleb(c);
        break;
    case PE_UDATA2:
        v = cfi_fixed(c, 2);
        break;
    case PE_UDATA4:
        v = cfi_fixed(c, 4);
        break;
    case PE_SLEB128:
        v = (uint64_t)cfi_sleb(c);
        break;
    case PE_SDATA2:
        v = (uint64_t)(int64_t)(int16_t)cfi_fixed(c, 2);
        break;
    case PE_SDATA4:
        v = (uint64_t)(int64_t)(int32_t)cfi_fixed(c, 4);
        break;
    default:
        c->bad = true;
        return 0;
    }
    if ((enc & 0x70) == PE_PCREL)
        v += at;
    else if ((enc & 0x70) == PE_DATAREL && datarel)
        v += datarel;
    else if (enc & 0x70)
        c->bad = true;
    return (uintptr_t)v;
}

/* ---- CIEs and FDEs -------------------------------------------------------------------- */

struct cfi_cie {
    uint64_t code_align;
    int64_t data_align;
    uint64_t ra;                    /* the return address's column */
    uint8_t fde_enc;
    bool has_aug_data;              /* "z": FDEs carry augmentation data */
    const uint8_t *insns, *end;     /* the initial instructions */
};

/* The length-prefixed entry at c, which then ends where the entry does.
 * (64-bit DWARF entries do not occur in .eh_frame: refused.) */
static bool cfi_entry(struct cfi_cur *c)
{
    uint32_t len = (uint32_t)cfi_fixed(c, 4);
    if (c->bad || len == 0 || len == UINT32_MAX || len > (size_t)(c->end - c->p))
        return false;
    c->end = c->p + len;
    return true;
}

static bool cfi_parse_cie(const struct dl_phdr_info *info, uintptr_t at, struct cfi_cie *cie)
{
    struct cfi_cur c = cfi_at(info, at);
    if (!cfi_entry(&c) || cfi_fixed(&c, 4) != 0) /* a CIE's id is 0 */
        return false;
    uint64_t version = cfi_fixed(&c, 1);
    if (c.bad || (version != 1 && version != 3))
        return false;
    const char *aug = (const char *)c.p;
    size_t alen = strnlen(aug, (size_t)(c.end - c.p));
    if (alen == (size_t)(c.end - c.p) || (alen && aug[0] != 'z'))
        return false;
    c.p += alen + 1;
    cie->code_align = cfi_uleb(&c);
    cie->data_align = cfi_sleb(&c);
    cie->ra = version == 1 ? cfi_fixed(&c, 1) : cfi_uleb(&c);
    cie->fde_enc = PE_ABSPTR;
    cie->has_aug_data = alen > 0;
    if (cie->has_aug_data) {
        uint64_t n = cfi_uleb(&c);
        if (c.bad || n > (size_t)(c.end - c.p))
            return false;
        const uint8_t *data_end = c.p + n;
        for (size_t i = 1; i < alen; i++) {
            if (aug[i] == 'R') {
                cie->fde_enc = (uint8_t)cfi_fixed(&c, 1);
            } else if (aug[i] == 'P') { /* the personality routine: not needed */
                uint8_t enc = (uint8_t)cfi_fixed(&c, 1);
                (void)cfi_encoded(&c, enc, 0);
            } else if (aug[i] == 'L') {
                (void)cfi_fixed(&c, 1);
            } else if (aug[i] != 'S' && aug[i] != 'B' && aug[i] != 'G') {
                return false; /* data we could not skip reliably */
            }
        }
        if (c.bad || c.p > data_end)
            return false;
        c.p = data_end;
    }
    cie->insns = c.p;
    cie->end = c.end;
    return !c.bad;
}

/* The FDE at at, if it covers target: its CIE, its first address, and its
 * instructions [*insns, *end). */
static bool cfi_parse_fde(const struct dl_phdr_info *info, uintptr_t at, uintptr_t target,
                          struct cfi_cie *cie, uintptr_t *begin, const uint8_t **insns,
                          const uint8_t **end)
{
    struct cfi_cur c = cfi_at(info, at);
    if (!cfi_entry(&c))
        return false;
    uintptr_t id_at = (uintptr_t)c.p;
    uint32_t id = (uint32_t)cfi_fixed(&c, 4);
    if (c.bad || id == 0 || !cfi_parse_cie(info, id_at - id, cie) ||
        (cie->fde_enc & PE_INDIRECT) || cie->fde_enc == PE_OMIT)
        return false;
    *begin = cfi_encoded(&c, cie->fde_enc, 0);
    uintptr_t range = cfi_encoded(&c, cie->fde_enc & 0x0f, 0);
    if (c.bad || target - *begin >= range)
        return false;
    if (cie->has_aug_data) {
        uint64_t n = cfi_uleb(&c);
        if (c.bad || n > (size_t)(c.end - c.p))
            return false;
        c.p += n;
    }
    *insns = c.p;
    *end = c.end;
    return true;
}

/* ---- running the instructions ------------------------------------------------------------ */

enum {
    RULE_SAME,      /* unchanged in the caller */
    RULE_UNDEF,     /* not recoverable (for the return address: no caller) */
    RULE_AT,        /* saved at CFA + off */
    RULE_VAL,       /* is CFA + off */
    RULE_REG,       /* is in register reg */
    RULE_UNKNOWN    /* a DWARF expression */
};

struct cfi_rule {
    uint8_t how;
    uint64_t reg;
    int64_t off;
};

struct cfi_row {
    bool cfa_known;                 /* a register plus an offset */
    uint64_t cfa_reg;
    int64_t cfa_off;
    struct cfi_rule fp, ra;
    bool ra_signed;                 /* aarch64: pointer authentication */
};

#define CFI_STATES 8 /* DW_CFA_remember_state nesting */

/* The rule of column reg, or NULL if it is not one of those tracked. */
static struct cfi_rule *cfi_rule(struct cfi_row *row, uint64_t reg, const struct cfi_cie *cie)
{
    if (reg == cie->ra)
        return &row->ra;
    return reg == DW_FP ? &row->fp : NULL;
}

/* DW_CFA_restore: back to the rule the CIE's instructions left. */
static void cfi_restore(struct cfi_row *row, uint64_t reg, const struct cfi_cie *cie,
                        const struct cfi_row *init)
{
    if (reg == cie->ra)
        row->ra = init->ra;
    else if (reg == DW_FP)
        row->fp = init->fp;
}

/* An offset factored by an alignment factor; wraps rather than overflows
 * on nonsense. */
static int64_t cfi_scale(int64_t v, int64_t factor)
{
    return (int64_t)((uint64_t)v * (uint64_t)factor);
}

static void cfi_set(struct cfi_row *row, uint64_t reg, const struct cfi_cie *cie, uint8_t how,
                    uint64_t from, int64_t off)
{
    struct cfi_rule *r = cfi_rule(row, reg, cie);
    if (r)
        *r = (struct cfi_rule){ how, from, off };
}

/* Skip a DWARF expression block. */
static void cfi_skip_block(struct cfi_cur *c)
{
    uint64_t n = cfi_uleb(c);
    if (!c->bad && n <= (size_t)(c->end - c->p))
        c->p += n;
    else
        c->bad = true;
}

/* Run the instructions [p, end) on row, from location loc, until the next
 * row would start past target.  init: the row the CIE's instructions
 * left, which DW_CFA_restore returns to.  False on anything not
 * understood. */
static bool cfi_run(const uint8_t *p, const uint8_t *end, const struct cfi_cie *cie,
                    uintptr_t loc, uintptr_t target, struct cfi_row *row,
                    const struct cfi_row *init)
{
    struct cfi_cur c = { p, end, false };
    struct cfi_row saved[CFI_STATES];
    unsigned nsaved = 0;
    while (c.p < c.end && !c.bad) {
        uint8_t op = (uint8_t)cfi_fixed(&c, 1);
        uint64_t reg, delta = 0;
        bool advance = false;
        switch (op >> 6) {
        case 1: /* DW_CFA_advance_loc */
            delta = op & 0x3f;
            advance = true;
            break;
        case 2: /* DW_CFA_offset */
            cfi_set(row, op & 0x3f, cie, RULE_AT, 0,
                    cfi_scale((int64_t)cfi_uleb(&c), cie->data_align));
            continue;
        case 3: /* DW_CFA_restore */
            cfi_restore(row, op & 0x3f, cie, init);
            continue;
        default:
            break;
        }
        if (!advance) {
            switch (op) {
            case 0x00: /* DW_CFA_nop */
                break;
            case 0x01: { /* DW_CFA_set_loc */
                uintptr_t to = cfi_encoded(&c, cie->fde_enc, 0);
                if (to > target)
                    return !c.bad;
                loc = to;
                break;
            }
            case 0x02: /* DW_CFA_advance_loc1, 2, 4 */
            case 0x03:
            case 0x04:
                delta = cfi_fixed(&c, op == 0x02 ? 1 : op == 0x03 ? 2 : 4);
                advance = true;
                break;
            case 0x05: /* DW_CFA_offset_extended */
                reg = cfi_uleb(&c);
                cfi_set(row, reg, cie, RULE_AT, 0,
                        cfi_scale((int64_t)cfi_uleb(&c), cie->data_align));
                break;
            case 0x06: /* DW_CFA_restore_extended */
                cfi_restore(row, cfi_uleb(&c), cie, init);
                break;
            case 0x07: /* DW_CFA_undefined */
                cfi_set(row, cfi_uleb(&c), cie, RULE_UNDEF, 0, 0);
                break;
            case 0x08: /* DW_CFA_same_value */
                cfi_set(row, cfi_uleb(&c), cie, RULE_SAME, 0, 0);
                break;
            case 0x09: /* DW_CFA_register */
                reg = cfi_uleb(&c);
                cfi_set(row, reg, cie, RULE_REG, cfi_uleb(&c), 0);
                break;
            case 0x0a: /* DW_CFA_remember_state */
                if (nsaved == CFI_STATES)
                    return false;
                saved[nsaved++] = *row;
                break;
            case 0x0b: /* DW_CFA_restore_state */
                if (!nsaved)
                    return false;
                *row = saved[--nsaved];
                break;
            case 0x0c: /* DW_CFA_def_cfa */
                row->cfa_reg = cfi_uleb(&c);
                row->cfa_off = (int64_t)cfi_uleb(&c);
                row->cfa_known = true;
                break;
            case 0x0d: /* DW_CFA_def_cfa_register */
                row->cfa_reg = cfi_uleb(&c);
                break;
            case 0x0e: /* DW_CFA_def_cfa_offset */
                row->cfa_off = (int64_t)cfi_uleb(&c);
                break;
            case 0x0f: /* DW_CFA_def_cfa_expression */
                cfi_skip_block(&c);
                row->cfa_known = false;
                break;
            case 0x10: /* DW_CFA_expression */
            case 0x16: /* DW_CFA_val_expression */
                cfi_set(row, cfi_uleb(&c), cie, RULE_UNKNOWN, 0, 0);
                cfi_skip_block(&c);
                break;
            case 0x11: /* DW_CFA_offset_extended_sf */
                reg = cfi_uleb(&c);
                cfi_set(row, reg, cie, RULE_AT, 0, cfi_scale(cfi_sleb(&c), cie->data_align));
                break;
            case 0x12: /* DW_CFA_def_cfa_sf */
                row->cfa_reg = cfi_uleb(&c);
                row->cfa_off = cfi_scale(cfi_sleb(&c), cie->data_align);
                row->cfa_known = true;
                break;
            case 0x13: /* DW_CFA_def_cfa_offset_sf */
                row->cfa_off = cfi_scale(cfi_sleb(&c), cie->data_align);
                break;
            case 0x14: /* DW_CFA_val_offset */
                reg = cfi_uleb(&c);
                cfi_set(row, reg, cie, RULE_VAL, 0,
                        cfi_scale((int64_t)cfi_uleb(&c), cie->data_align));
                break;
            case 0x15: /* DW_CFA_val_offset_sf */
                reg = cfi_uleb(&c);
                cfi_set(row, reg, cie, RULE_VAL, 0, cfi_scale(cfi_sleb(&c), cie->data_align));
                break;
#if defined(__aarch64__)
            case 0x2d: /* DW_CFA_AARCH64_negate_ra_state */
                row->ra_signed = !row->ra_signed;
                break;
#endif
            case 0x2e: /* DW_CFA_GNU_args_size */
                (void)cfi_uleb(&c);
                break;
            case 0x2f: /* DW_CFA_GNU_negative_offset_extended */
                reg = cfi_uleb(&c);
                cfi_set(row, reg, cie, RULE_AT, 0,
                        cfi_scale((int64_t)(0 - cfi_uleb(&c)), cie->data_align));
                break;
            default:
                return false;
            }
        }
        if (advance) {
            uintptr_t to = loc + delta * cie->code_align;
            if (to > target)
                return !c.bad;
            loc = to;
        }
    }
    return !c.bad;
}

/* ---- the step -------------------------------------------------------------------------- */

/* The value of register reg in frame r, if tracked. */
static bool cfi_reg(const braid__unwind_regs *r, uint64_t reg, uintptr_t *v)
{
    if (reg == DW_SP)
        *v = r->sp;
    else if (reg == DW_FP)
        *v = r->fp;
    else if (reg == DW_LR)
        *v = r->lr;
    else
        return false;
    return true;
}

/* The word at addr in the copied stack. */
static bool cfi_load(const braid__stack_copy *s, uintptr_t addr, uintptr_t *v)
{
    size_t i = (addr - s->base) / sizeof(uintptr_t);
    if (addr < s->base || (addr - s->base) % sizeof(uintptr_t) || i >= s->n)
        return false;
    *v = s->words[i];
    return true;
}

/* The caller's value of register self (ruled by rule) in frame r. */
static bool cfi_apply(const struct cfi_rule *rule, uint64_t self, const braid__unwind_regs *r,
                      uintptr_t cfa, const braid__stack_copy *s, uintptr_t *v)
{
    switch (rule->how) {
    case RULE_SAME:
        return cfi_reg(r, self, v);
    case RULE_AT:
        return cfi_load(s, cfa + (uintptr_t)rule->off, v);
    case RULE_VAL:
        *v = cfa + (uintptr_t)rule->off;
        return true;
    case RULE_REG:
        return cfi_reg(r, rule->reg, v);
    default:
        return false;
    }
}

struct cfi_job {
    braid__unwind_regs *r;
    uintptr_t target;               /* the pc, or the call before a return address */
    bool first;
    const braid__stack_copy *stack;
    bool done;
};

/* The FDE for target from the module's .eh_frame_hdr at hdr: a binary
 * search of its table of (first address, FDE) pairs, sorted by address. */
static bool cfi_find_fde(const struct dl_phdr_info *info, uintptr_t hdr, uintptr_t target,
                         uintptr_t *fde)
{
    struct cfi_cur c = cfi_at(info, hdr);
    uint8_t version = (uint8_t)cfi_fixed(&c, 1);
    uint8_t ptr_enc = (uint8_t)cfi_fixed(&c, 1);
    uint8_t count_enc = (uint8_t)cfi_fixed(&c, 1);
    uint8_t table_enc = (uint8_t)cfi_fixed(&c, 1);
    if (c.bad || version != 1 || count_enc == PE_OMIT ||
        table_enc != (PE_DATAREL | PE_SDATA4) || (ptr_enc & PE_INDIRECT) ||
        (count_enc & PE_INDIRECT))
        return false;
    (void)cfi_encoded(&c, ptr_enc, hdr);
    uintptr_t count = cfi_encoded(&c, count_enc, hdr);
    if (c.bad || count == 0 || count > (size_t)(c.end - c.p) / 8)
        return false;
    size_t lo = 0, hi = count; /* the answer is entry lo - 1 */
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int32_t start;
        memcpy(&start, c.p + mid * 8, 4);
        if (hdr + (uintptr_t)(intptr_t)start <= target)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (!lo)
        return false;
    int32_t off;
    memcpy(&off, c.p + (lo - 1) * 8 + 4, 4);
    *fde = hdr + (uintptr_t)(intptr_t)off;
    return true;
}

/* The step itself, inside the module that holds the pc. */
static bool cfi_step_in(const struct dl_phdr_info *info, uintptr_t hdr, struct cfi_job *j)
{
    uintptr_t fde, begin;
    struct cfi_cie cie;
    const uint8_t *insns, *end;
    if (!cfi_find_fde(info, hdr, j->target, &fde) ||
        !cfi_parse_fde(info, fde, j->target, &cie, &begin, &insns, &end))
        return false;
    struct cfi_row init = { .fp.how = RULE_SAME, .ra.how = RULE_SAME };
    if (!cfi_run(cie.insns, cie.end, &cie, 0, UINTPTR_MAX, &init, &init))
        return false;
    struct cfi_row row = init;
    if (!cfi_run(insns, end, &cie, begin, j->target, &row, &init) || !row.cfa_known)
        return false;
    const braid__unwind_regs *r = j->r;
    uintptr_t cfa, ra, fp;
    if (!cfi_reg(r, row.cfa_reg, &cfa))
        return false;
    cfa += (uintptr_t)row.cfa_off;
    if (!cfi_apply(&row.ra, cie.ra, r, cfa, j->stack, &ra) || !ra)
        return false; /* an undefined return address: the outermost frame */
    if (row.fp.how == RULE_UNDEF)
        fp = 0;
    else if (!cfi_apply(&row.fp, DW_FP, r, cfa, j->stack, &fp))
        return false;
    /* The caller's stack pointer is above ours, or equal only when the
     * interrupted function has not moved it (a leaf keeping its return
     * address in lr): anything else is a corrupt stack or a wrong rule. */
    if (cfa < r->sp || (cfa == r->sp && !j->first))
        return false;
#if defined(__aarch64__)
    if (row.ra_signed)
        ra &= (UINT64_C(1) << 48) - 1; /* drop the authentication code */
#endif
    *j->r = (braid__unwind_regs){ .pc = ra, .sp = cfa, .fp = fp, .lr = ra };
    return true;
}

/* dl_iterate_phdr callback: step in the module whose segment holds the
 * target, through its PT_GNU_EH_FRAME (.eh_frame_hdr). */
static int cfi_module(struct dl_phdr_info *info, size_t size, void *arg)
{
    (void)size;
    struct cfi_job *j = arg;
    const ElfW(Phdr) *hdr = NULL;
    bool holds = false;
    for (unsigned i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type == PT_LOAD && j->target - (info->dlpi_addr + ph->p_vaddr) < ph->p_memsz)
            holds = true;
        else if (ph->p_type == PT_GNU_EH_FRAME)
            hdr = ph;
    }
    if (!holds)
        return 0;
    j->done = hdr && cfi_step_in(info, info->dlpi_addr + hdr->p_vaddr, j);
    return 1;
}

bool braid__unwind_step(braid__unwind_regs *r, bool first, const braid__stack_copy *stack)
{
    if (!r->pc)
        return false;
    /* A return address follows its call, and may be the first address of
     * the next function: the call is what belongs to the caller. */
    struct cfi_job j = { r, first ? r->pc : r->pc - 1, first, stack, false };
    dl_iterate_phdr(cfi_module, &j);
    return j.done;
}

#else /* no call frame information support for this architecture */

bool braid__unwind_step(braid__unwind_regs *r, bool first, const braid__stack_copy *stack)
{
    (void)r;
    (void)first;
    (void)stack;
    return false;
}

#endif
