/* The per-step arena: a chain of blocks, merged into one at reset so that a
 * steady training loop allocates nothing from the system. */
#include "fm/fm_tensor.h"

#include <stdlib.h>
#include <string.h>

#define ARENA_ALIGN 64

typedef struct block {
    struct block *next;
    size_t size, used;
    unsigned char *mem;
} block;

struct fm_arena {
    block *head;       /* current block; older ones follow */
    size_t used;       /* bytes handed out since reset, all blocks */
    size_t capacity;   /* bytes held, all blocks */
    size_t peak;       /* highest `used` since the arena was made */
};

static block *block_new(size_t size)
{
    block *b = fm_xmalloc(sizeof *b);
    b->next = NULL;
    b->size = size;
    b->used = 0;
    b->mem = fm_xaligned(size);
    return b;
}

fm_arena *fm_arena_new(size_t initial_bytes)
{
    fm_arena *a = fm_xcalloc(1, sizeof *a);
    size_t size = initial_bytes < (1u << 20) ? (1u << 20) : initial_bytes;
    a->head = block_new(size);
    a->capacity = size;
    return a;
}

static void free_chain(block *b)
{
    while (b) {
        block *next = b->next;
        free(b->mem);
        free(b);
        b = next;
    }
}

void fm_arena_free(fm_arena *a)
{
    if (!a) return;
    free_chain(a->head);
    free(a);
}

void *fm_arena_alloc(fm_arena *a, size_t bytes)
{
    size_t need = (bytes + ARENA_ALIGN - 1) & ~(size_t)(ARENA_ALIGN - 1);
    if (need == 0) need = ARENA_ALIGN;
    block *b = a->head;
    if (b->size - b->used < need) {
        size_t size = b->size * 2 > need ? b->size * 2 : need;
        block *nb = block_new(size);
        nb->next = b;
        a->head = b = nb;
        a->capacity += size;
    }
    void *p = b->mem + b->used;
    b->used += need;
    a->used += need;
    if (a->used > a->peak) a->peak = a->used;
    return p;
}

void *fm_arena_calloc(fm_arena *a, size_t bytes)
{
    return memset(fm_arena_alloc(a, bytes), 0, bytes);
}

void fm_arena_reset(fm_arena *a)
{
    if (a->head->next) {
        size_t total = a->capacity;
        free_chain(a->head);
        a->head = block_new(total);
    }
    a->head->used = 0;
    a->used = 0;
}

fm_arena_mark fm_arena_mark_get(const fm_arena *a)
{
    return (fm_arena_mark){.block = a->head, .block_used = a->head->used, .used = a->used};
}

void fm_arena_release(fm_arena *a, fm_arena_mark m)
{
    block *b = a->head;
    /* Blocks added after the mark hold only memory handed out after it: they
     * are emptied but kept, so that reset still merges the whole chain and
     * the next step does not grow again. */
    for (; b && b != m.block; b = b->next) b->used = 0;
    FM_ASSERT(b != NULL && b->used >= m.block_used);  /* a mark from this arena, since reset */
    b->used = m.block_used;
    a->used = m.used;
}

size_t fm_arena_used(const fm_arena *a) { return a->used; }

size_t fm_arena_peak(const fm_arena *a) { return a->peak; }

size_t fm_arena_capacity(const fm_arena *a) { return a->capacity; }
