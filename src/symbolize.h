/*
 * Naming code addresses from a module's ELF symbol table (.symtab, or
 * .dynsym in a stripped file), for dumps: dladdr() only knows exported
 * dynamic symbols, so in a program linked with libbraid.a it names none.
 * Never call these from a signal handler (they allocate and lock).
 */
#ifndef BRAID_SYMBOLIZE_H
#define BRAID_SYMBOLIZE_H

#include <stddef.h>
#include <stdint.h>

typedef struct braid__sym {
    uintptr_t start, size; /* run-time address (load bias added) */
    uint32_t name;         /* offset in braid__symtab.names */
} braid__sym;

/* The FUNC symbols of one module, sorted by start. */
typedef struct braid__symtab {
    braid__sym *syms;
    size_t n;
    char *names;
} braid__symtab;

/* Read the FUNC symbols of the 64-bit ELF image img[0, len) (in memory,
 * host byte order), adding bias to their values.  0, or -ENOEXEC
 * (malformed, or not 64-bit ELF), -ENOENT (no symbol table), -ENOMEM;
 * on an error *out is an empty table.
 * Every offset is checked against len: any bytes are safe to pass. */
int braid__symtab_parse(const void *img, size_t len, uintptr_t bias, braid__symtab *out);
void braid__symtab_free(braid__symtab *t);

/* The symbol containing addr, and addr's offset in it; NULL if none. */
const char *braid__symtab_find(const braid__symtab *t, uintptr_t addr, uintptr_t *off);

/* The name of the function of the running process containing addr, from
 * its module's file (read once per module, then cached for the life of
 * the process), and addr's offset in it; NULL if unknown. */
const char *braid__symbolize(uintptr_t addr, uintptr_t *off);

#endif
