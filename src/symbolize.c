/*
 * Naming code addresses from ELF symbol tables (see symbolize.h).
 *
 * A module's file is mapped once, its FUNC symbols copied out (with its
 * string table) into a sorted array, and the mapping dropped; the array is
 * kept for the life of the process in a list reachable from a static
 * pointer (modules are not unloaded while braid runs, and a dump must not
 * reread files).  The parser trusts nothing in the file: a truncated or
 * corrupted image gives an error, never a read outside it.
 */
#include "symbolize.h"
#include "util.h"

#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <link.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define HOST_ELFDATA ELFDATA2LSB
#else
#define HOST_ELFDATA ELFDATA2MSB
#endif

/* [off, off + size) lies inside an image of len bytes. */
static bool in_image(size_t len, uint64_t off, uint64_t size)
{
    return off <= len && size <= len - off;
}

/* Section i's header; the caller checked the header table's bounds.
 * memcpy, because a corrupted file may place it unaligned. */
static Elf64_Shdr section(const unsigned char *img, const Elf64_Ehdr *eh, unsigned i)
{
    Elf64_Shdr sh;
    memcpy(&sh, img + eh->e_shoff + (uint64_t)i * sizeof sh, sizeof sh);
    return sh;
}

/* The symbol table (.symtab, else .dynsym) and its string table. */
static int find_tables(const unsigned char *img, size_t len, Elf64_Shdr *symtab,
                       Elf64_Shdr *strtab)
{
    Elf64_Ehdr eh;
    if (len < sizeof eh)
        return -ENOEXEC;
    memcpy(&eh, img, sizeof eh);
    if (memcmp(eh.e_ident, ELFMAG, SELFMAG) != 0 || eh.e_ident[EI_CLASS] != ELFCLASS64 ||
        eh.e_ident[EI_DATA] != HOST_ELFDATA || eh.e_shentsize != sizeof(Elf64_Shdr) ||
        !in_image(len, eh.e_shoff, (uint64_t)eh.e_shnum * sizeof(Elf64_Shdr)))
        return -ENOEXEC;
    int found = -1;
    for (unsigned i = 0; i < eh.e_shnum; i++) {
        Elf64_Shdr sh = section(img, &eh, i);
        if (sh.sh_type == SHT_SYMTAB || (sh.sh_type == SHT_DYNSYM && found < 0)) {
            *symtab = sh;
            found = (int)i;
        }
        if (sh.sh_type == SHT_SYMTAB)
            break;
    }
    if (found < 0)
        return -ENOENT;
    if (symtab->sh_entsize != sizeof(Elf64_Sym) || symtab->sh_link >= eh.e_shnum ||
        !in_image(len, symtab->sh_offset, symtab->sh_size))
        return -ENOEXEC;
    *strtab = section(img, &eh, symtab->sh_link);
    if (strtab->sh_type != SHT_STRTAB || !in_image(len, strtab->sh_offset, strtab->sh_size))
        return -ENOEXEC;
    return 0;
}

/* A defined function whose name is a non-empty string inside strtab (a
 * damaged image may point a name at any NUL). */
static bool usable(const Elf64_Sym *s, const unsigned char *str, uint64_t strsz)
{
    return ELF64_ST_TYPE(s->st_info) == STT_FUNC && s->st_shndx != SHN_UNDEF && s->st_value &&
           s->st_name && s->st_name < strsz && str[s->st_name] &&
           memchr(str + s->st_name, 0, strsz - s->st_name) != NULL;
}

/* By start; at one address the largest last, which is what find takes. */
static int by_start(const void *a, const void *b)
{
    const braid__sym *x = a, *y = b;
    if (x->start != y->start)
        return x->start < y->start ? -1 : 1;
    return (x->size > y->size) - (x->size < y->size);
}

int braid__symtab_parse(const void *img, size_t len, uintptr_t bias, braid__symtab *out)
{
    const unsigned char *p = img;
    Elf64_Shdr symtab, strtab;
    memset(out, 0, sizeof *out);
    int rc = find_tables(p, len, &symtab, &strtab);
    if (rc < 0)
        return rc;
    size_t nsym = symtab.sh_size / sizeof(Elf64_Sym);
    const unsigned char *str = p + strtab.sh_offset;
    out->syms = braid__malloc((nsym ? nsym : 1) * sizeof *out->syms);
    out->names = braid__malloc(strtab.sh_size ? strtab.sh_size : 1);
    if (!out->syms || !out->names) {
        braid__symtab_free(out);
        return -ENOMEM;
    }
    memcpy(out->names, str, strtab.sh_size);
    for (size_t i = 0; i < nsym; i++) {
        Elf64_Sym s;
        memcpy(&s, p + symtab.sh_offset + i * sizeof s, sizeof s);
        if (usable(&s, str, strtab.sh_size))
            out->syms[out->n++] =
                (braid__sym){.start = s.st_value + bias, .size = s.st_size, .name = s.st_name};
    }
    qsort(out->syms, out->n, sizeof *out->syms, by_start);
    return 0;
}

void braid__symtab_free(braid__symtab *t)
{
    free(t->syms);
    free(t->names);
    t->syms = NULL;
    t->names = NULL;
    t->n = 0;
}

const char *braid__symtab_find(const braid__symtab *t, uintptr_t addr, uintptr_t *off)
{
    size_t lo = 0, hi = t->n; /* the answer is syms[lo - 1] */
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (t->syms[mid].start <= addr)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (!lo)
        return NULL;
    const braid__sym *s = &t->syms[lo - 1];
    /* A size-0 symbol (hand-written assembly) runs to the next one. */
    if (s->size && addr - s->start >= s->size)
        return NULL;
    *off = addr - s->start;
    return t->names + s->name;
}

/* ---- the running process's modules -------------------------------------------------- */

typedef struct module {
    struct module *next;
    uintptr_t base;
    char *path;
    braid__symtab tab; /* empty if the file could not be read */
} module;

static module *modules;
static pthread_mutex_t modules_lock = PTHREAD_MUTEX_INITIALIZER;

struct locate {
    uintptr_t addr, base;
    const char *name;
};

/* dl_iterate_phdr callback: stop at the module with a segment holding addr. */
static int locate_module(struct dl_phdr_info *info, size_t size, void *arg)
{
    (void)size;
    struct locate *l = arg;
    for (unsigned i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type == PT_LOAD && l->addr - (info->dlpi_addr + ph->p_vaddr) < ph->p_memsz) {
            l->base = info->dlpi_addr;
            l->name = info->dlpi_name;
            return 1;
        }
    }
    return 0;
}

/* Map the file at path and parse it with load bias base: 0, -ENOMEM (try
 * again later), or another negative errno (this file will not do). */
static int read_module(const char *path, uintptr_t base, braid__symtab *tab)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -ENOENT;
    struct stat st;
    int rc = -ENOEXEC;
    if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_size > 0) {
        void *img = braid__mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (img != MAP_FAILED) {
            rc = braid__symtab_parse(img, (size_t)st.st_size, base, tab);
            munmap(img, (size_t)st.st_size);
        } else if (errno == ENOMEM) {
            rc = -ENOMEM;
        }
    }
    close(fd);
    return rc;
}

/* The cached module (base, name), read now if it is new; NULL without
 * memory.  Called with modules_lock held. */
static module *module_for(uintptr_t base, const char *name)
{
    for (module *m = modules; m; m = m->next)
        if (m->base == base && strcmp(m->path, name) == 0)
            return m;
    /* The main program's entry has no name: its file is /proc/self/exe.
     * A file that cannot be read leaves the table empty, and is not read
     * again; one that memory was short for is, by a later dump. */
    module *m = braid__calloc(1, sizeof *m);
    if (!m || !(m->path = braid__strdup(name)) ||
        read_module(name[0] ? name : "/proc/self/exe", base, &m->tab) == -ENOMEM) {
        if (m)
            free(m->path);
        free(m);
        return NULL;
    }
    m->base = base;
    m->next = modules;
    modules = m;
    return m;
}

const char *braid__symbolize(uintptr_t addr, uintptr_t *off)
{
    struct locate l = {.addr = addr};
    if (!dl_iterate_phdr(locate_module, &l))
        return NULL;
    pthread_mutex_lock(&modules_lock);
    const module *m = module_for(l.base, l.name ? l.name : "");
    pthread_mutex_unlock(&modules_lock);
    /* Entries are never changed or freed once listed. */
    return m ? braid__symtab_find(&m->tab, addr, off) : NULL;
}
