/* lua_dist.c — fm.dist: the processes of an `mpirun … fmhost script` job
 * seen from Lua (fm_dist.h underneath), and the plain Lua values they send
 * each other.
 *
 * Values cross between processes as bytes: nil, booleans, integers, floats,
 * strings and tables of them (keys: strings, numbers, booleans), nested at
 * most VALUE_DEPTH deep.  A function, a userdata (a run, a plugin) or a
 * coroutine cannot cross, and saying so is the whole error. */
#include <stdlib.h>
#include <string.h>

#include "fm/fm_dist.h"
#include "fm_lua_internal.h"

#define VALUE_DEPTH 32

enum { V_NIL = 'n', V_TRUE = 't', V_FALSE = 'f', V_INT = 'i', V_FLOAT = 'd', V_STRING = 's',
       V_TABLE = 'T', V_END = 'E',
       V_ERROR = 'X' /* in place of a whole value: the rest is the message to raise */ };

/* ---- encoding ------------------------------------------------------------- */

typedef struct bytes {
    char *p;
    size_t n, cap;
} bytes;

static void put(bytes *b, const void *src, size_t n)
{
    if (b->n + n > b->cap) {
        b->cap = b->cap ? 2 * b->cap : 256;
        if (b->cap < b->n + n) b->cap = b->n + n;
        b->p = fm_xrealloc(b->p, b->cap);
    }
    memcpy(b->p + b->n, src, n);
    b->n += n;
}

static void put_tag(bytes *b, char tag) { put(b, &tag, 1); }

/* Appends the value at idx to b.  NULL, or what cannot cross (a Lua type
 * name or a reason); the stack is left as it was either way. */
static const char *encode(lua_State *L, bytes *b, int idx, int depth)
{
    idx = lua_absindex(L, idx);
    switch (lua_type(L, idx)) {
    case LUA_TNIL: put_tag(b, V_NIL); return NULL;
    case LUA_TBOOLEAN: put_tag(b, lua_toboolean(L, idx) ? V_TRUE : V_FALSE); return NULL;
    case LUA_TNUMBER:
        if (lua_isinteger(L, idx)) {
            lua_Integer v = lua_tointeger(L, idx);
            put_tag(b, V_INT);
            put(b, &v, sizeof v);
        } else {
            lua_Number v = lua_tonumber(L, idx);
            put_tag(b, V_FLOAT);
            put(b, &v, sizeof v);
        }
        return NULL;
    case LUA_TSTRING: {
        size_t n;
        const char *str = lua_tolstring(L, idx, &n);
        uint64_t len = n;
        put_tag(b, V_STRING);
        put(b, &len, sizeof len);
        put(b, str, n);
        return NULL;
    }
    case LUA_TTABLE:
        if (depth >= VALUE_DEPTH) return "table nested too deep (a cycle?)";
        luaL_checkstack(L, 3, "fm.dist: value nested too deep");
        put_tag(b, V_TABLE);
        for (lua_pushnil(L); lua_next(L, idx); lua_pop(L, 1)) {
            int kt = lua_type(L, -2);
            const char *bad = kt != LUA_TSTRING && kt != LUA_TNUMBER && kt != LUA_TBOOLEAN
                                  ? "table key that is not a string, number or boolean"
                                  : encode(L, b, -2, depth + 1);
            if (!bad) bad = encode(L, b, -1, depth + 1);
            if (bad) {
                lua_pop(L, 2);
                return bad;
            }
        }
        put_tag(b, V_END);
        return NULL;
    default: return luaL_typename(L, idx);
    }
}

/* Pushes the value at idx encoded as a Lua string, or, when it cannot
 * cross, a string that decodes to an error naming `what` and the culprit. */
static void push_encoded(lua_State *L, int idx, const char *what)
{
    bytes b = {0};
    const char *bad = encode(L, &b, idx, 0);
    if (bad) {
        b.n = 0;
        put_tag(&b, V_ERROR);
        lua_pushfstring(L, "%s: rank %d: a %s cannot be sent between ranks: send plain values (numbers, "
                           "strings, booleans and tables of them)", what, fm_dist_rank(), bad);
        size_t n;
        const char *msg = lua_tolstring(L, -1, &n);
        put(&b, msg, n);
        lua_pop(L, 1);
    }
    lua_pushlstring(L, b.p ? b.p : "", b.n);
    free(b.p);
}

/* ---- decoding ------------------------------------------------------------- */

typedef struct reader {
    const char *p, *end;
} reader;

static bool take(reader *r, void *out, size_t n)
{
    if ((size_t)(r->end - r->p) < n) return false;
    memcpy(out, r->p, n);
    r->p += n;
    return true;
}

/* Pushes the next value; false (nothing pushed) on malformed bytes. */
static bool decode(lua_State *L, reader *r, int depth)
{
    char tag;
    if (!take(r, &tag, 1) || depth > VALUE_DEPTH) return false;
    luaL_checkstack(L, 4, "fm.dist: value nested too deep");
    switch (tag) {
    case V_NIL: lua_pushnil(L); return true;
    case V_TRUE: lua_pushboolean(L, 1); return true;
    case V_FALSE: lua_pushboolean(L, 0); return true;
    case V_INT: {
        lua_Integer v;
        if (!take(r, &v, sizeof v)) return false;
        lua_pushinteger(L, v);
        return true;
    }
    case V_FLOAT: {
        lua_Number v;
        if (!take(r, &v, sizeof v)) return false;
        lua_pushnumber(L, v);
        return true;
    }
    case V_STRING: {
        uint64_t len;
        if (!take(r, &len, sizeof len) || len > (uint64_t)(r->end - r->p)) return false;
        lua_pushlstring(L, r->p, (size_t)len);
        r->p += len;
        return true;
    }
    case V_TABLE:
        lua_newtable(L);
        while (r->p < r->end && *r->p != V_END) {
            if (!decode(L, r, depth + 1)) goto bad;
            if (lua_isnil(L, -1) || !decode(L, r, depth + 1)) {
                lua_pop(L, 1);
                goto bad;
            }
            lua_rawset(L, -3);
        }
        if (r->p == r->end) goto bad;
        r->p++;
        return true;
    bad:
        lua_pop(L, 1);
        return false;
    default: return false;
    }
}

/* Pushes the value that bytes[0, n) encode; raises the error they carry
 * (V_ERROR), or on malformed bytes. */
static void push_decoded(lua_State *L, const char *bytes, size_t n, const char *what)
{
    if (n > 0 && bytes[0] == V_ERROR) {
        lua_pushlstring(L, bytes + 1, n - 1);
        lua_error(L);
    }
    reader r = {bytes, bytes + n};
    if (!decode(L, &r, 0) || r.p != r.end)
        luaL_error(L, "%s: malformed value received from another rank", what);
}

/* ---- the collectives -------------------------------------------------------- */

/* fm.dist.gather(v) -> on rank 0 an array of every rank's v in rank order,
 * elsewhere nil.  Every rank must call it. */
static int l_gather(lua_State *L)
{
    lua_settop(L, 1);
    push_encoded(L, 1, "fm.dist.gather");
    size_t n;
    const char *mine = lua_tolstring(L, -1, &n);
    int size = fm_dist_size();
    size_t *len = fm_xmalloc((size_t)size * sizeof *len);
    void *all = NULL;
    if (fm_dist_gather(mine, n, &all, len) != FM_OK) {
        free(len);
        return fm_lua_core_error(L, "fm.dist.gather");
    }
    if (!all) {
        free(len);
        lua_pushnil(L);
        return 1;
    }
    lua_createtable(L, size, 0);
    size_t off = 0;
    for (int r = 0; r < size; r++) {
        /* Into a Lua string first, so that a raise below cannot leak `all`. */
        lua_pushlstring(L, (const char *)all + off, len[r]);
        lua_rawseti(L, -2, r + 1);
        off += len[r];
    }
    free(all);
    free(len);
    for (int r = 0; r < size; r++) {
        lua_rawgeti(L, -1, r + 1);
        size_t n_r;
        const char *bytes_r = lua_tolstring(L, -1, &n_r);
        push_decoded(L, bytes_r, n_r, "fm.dist.gather");
        lua_rawseti(L, -3, r + 1);
        lua_pop(L, 1);
    }
    return 1;
}

/* fm.dist.broadcast(v) -> rank 0's v, on every rank. */
static int l_broadcast(lua_State *L)
{
    lua_settop(L, 1);
    size_t n = 0;
    void *bytes = NULL;
    if (fm_dist_rank() == 0) {
        push_encoded(L, 1, "fm.dist.broadcast");
        bytes = (void *)lua_tolstring(L, -1, &n);
    }
    if (fm_dist_broadcast(&bytes, &n) != FM_OK) return fm_lua_core_error(L, "fm.dist.broadcast");
    if (fm_dist_rank() == 0) {
        push_decoded(L, bytes, n, "fm.dist.broadcast");
        return 1;
    }
    lua_pushlstring(L, bytes, n);  /* so that a raise below cannot leak it */
    free(bytes);
    push_decoded(L, lua_tostring(L, -1), n, "fm.dist.broadcast");
    return 1;
}

static int l_barrier(lua_State *L)
{
    if (fm_dist_barrier() != FM_OK) return fm_lua_core_error(L, "fm.dist.barrier");
    return 0;
}

static int l_rank(lua_State *L)
{
    lua_pushinteger(L, fm_dist_rank());
    return 1;
}

static int l_size(lua_State *L)
{
    lua_pushinteger(L, fm_dist_size());
    return 1;
}

/* {i, ok, the value at the top (popped)} appended to the table at `done`. */
static void add_entry(lua_State *L, int done, lua_Integer i, bool ok)
{
    lua_createtable(L, 3, 0);
    lua_pushinteger(L, i);
    lua_rawseti(L, -2, 1);
    lua_pushboolean(L, ok);
    lua_rawseti(L, -2, 2);
    lua_rotate(L, -2, 1);
    lua_rawseti(L, -2, 3);
    lua_rawseti(L, done, (lua_Integer)lua_rawlen(L, done) + 1);
}

/* One item of fm.dist.map on this rank: {index, ok, value or message}
 * appended to the table at `done`. */
static void map_one(lua_State *L, int items, int fn, int done, lua_Integer i)
{
    lua_pushvalue(L, fn);
    lua_geti(L, items, i);
    lua_pushinteger(L, i);
    bool ok = lua_pcall(L, 2, 1, 0) == LUA_OK;
    if (ok) {
        /* A result that cannot cross is this item's error, not the job's. */
        bytes b = {0};
        const char *bad = encode(L, &b, -1, 0);
        free(b.p);
        if (bad) {
            lua_pop(L, 1);
            lua_pushfstring(L, "its result holds a %s, which cannot be sent between ranks: "
                               "return plain values (numbers, strings, booleans and tables "
                               "of them)", bad);
            ok = false;
        }
    } else if (!lua_isstring(L, -1)) {
        lua_pop(L, 1);
        lua_pushstring(L, "(an error object that is not a string)");
    }
    add_entry(L, done, i, ok);
}

/* fm.dist.map(items, fn) -> results.  Item i (of the array `items`) goes to
 * rank (i - 1) % size, which calls fn(items[i], i); every rank gets the
 * array of all results in item order.  An error in any fn is raised on
 * every rank, naming the item and the rank, once all have finished; after a
 * signal a rank starts none of its remaining items. */
static int l_map(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    luaL_checktype(L, 2, LUA_TFUNCTION);
    lua_settop(L, 2);
    lua_Integer n = (lua_Integer)luaL_len(L, 1);
    int rank = fm_dist_rank(), size = fm_dist_size();
    lua_newtable(L); /* 3: this rank's {i, ok, value} */
    for (lua_Integer i = 1 + rank; i <= n; i += size) {
        int sig = fm_stop_requested();
        if (!sig) {
            map_one(L, 1, 2, 3, i);
            continue;
        }
        /* A signal (Ctrl-C, or mpirun passing one on) stops this rank's
         * items where they stand: the rest are errors, not holes. */
        lua_pushfstring(L, "not run: interrupted by signal %d", sig);
        add_entry(L, 3, i, false);
    }

    /* Rank 0 puts the results in order and finds the first error ... */
    lua_pushcfunction(L, l_gather);
    lua_pushvalue(L, 3);
    lua_call(L, 1, 1); /* 4: on rank 0, every rank's list */
    if (rank == 0) {
        lua_createtable(L, 0, 3); /* 5: {ok, message, results} */
        lua_createtable(L, (int)n, 0);
        lua_Integer first_bad = 0;
        for (int r = 1; r <= size; r++) {
            lua_geti(L, 4, r);
            lua_Integer m = (lua_Integer)lua_rawlen(L, -1);
            for (lua_Integer k = 1; k <= m; k++) {
                lua_geti(L, -1, k);
                lua_geti(L, -1, 1);
                lua_Integer i = lua_tointeger(L, -1);
                lua_geti(L, -2, 2);
                bool ok = lua_toboolean(L, -1);
                lua_geti(L, -3, 3);
                if (ok) {
                    lua_seti(L, -6, i);
                } else if (first_bad == 0 || i < first_bad) {
                    first_bad = i;
                    lua_pushfstring(L, "fm.dist.map: item %I on rank %d: %s", (LUAI_UACINT)i,
                                    r - 1, lua_tostring(L, -1));
                    lua_setfield(L, -8, "message");
                    lua_pop(L, 1);
                } else {
                    lua_pop(L, 1);
                }
                lua_pop(L, 3);
            }
            lua_pop(L, 1);
        }
        lua_setfield(L, 5, "results");
    } else {
        lua_pushnil(L);
    }
    /* ... and tells every rank. */
    lua_pushcfunction(L, l_broadcast);
    lua_pushvalue(L, 5);
    lua_call(L, 1, 1);
    if (lua_getfield(L, -1, "message") == LUA_TSTRING) return lua_error(L);
    lua_pop(L, 1);
    lua_getfield(L, -1, "results");
    return 1;
}

void fm_lua_open_dist(lua_State *L)
{
    static const luaL_Reg funcs[] = {
        {"rank", l_rank},       {"size", l_size},           {"map", l_map},
        {"gather", l_gather},   {"broadcast", l_broadcast}, {"barrier", l_barrier},
        {NULL, NULL},
    };
    luaL_newlib(L, funcs);
    fm_lua_setstr(L, "backend", fm_dist_name());
    lua_setfield(L, -2, "dist");
}
