/* Results: Markdown tables, CSV and Markdown files (written atomically, so
 * an interrupted script never leaves half a table), and comparison plots
 * drawn by the core's PLplot code. */
#include "fm_lua_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fm/fm_io.h"
#include "fm/fm_report.h"

#define MAX_COLUMNS 256

/* ---- cells ---------------------------------------------------------------------- */

/* Stack slots shared by fm.table and fm.write_csv once the columns are
 * normalised. */
typedef struct table_ctx {
    const char *what;
    int rows;     /* the rows argument */
    int columns;  /* normalised columns: array of {key=, title=, format=} */
    int n_rows, n_cols;
    bool csv;
} table_ctx;

/* Normalises the columns argument at idx: "key", {"key", "Title", fmt} or
 * {key=, title=, format=}; nil means every key of the first row, sorted.
 * Pushes the normalised array. */
static void push_columns(lua_State *L, table_ctx *t, int idx)
{
    lua_newtable(L);
    int out = lua_gettop(L), n = 0;
    if (lua_isnoneornil(L, idx)) {
        if (t->n_rows == 0) return;
        /* Every string key of the first row, sorted so that the same rows
         * always give the same table. */
        lua_rawgeti(L, t->rows, 1);
        if (!lua_istable(L, -1))
            luaL_error(L, "%s: row 1 must be a table, got %s", t->what, luaL_typename(L, -1));
        lua_newtable(L);
        for (lua_pushnil(L); lua_next(L, -3); lua_pop(L, 1)) {
            if (lua_type(L, -2) != LUA_TSTRING) continue;
            lua_pushvalue(L, -2);
            lua_rawseti(L, -4, ++n);
        }
        lua_getglobal(L, "table");
        lua_getfield(L, -1, "sort");
        lua_pushvalue(L, -3);
        lua_call(L, 1, 0);
        lua_pop(L, 1);
        for (int c = 1; c <= n; c++) {
            lua_createtable(L, 0, 1);
            lua_rawgeti(L, -2, c);
            lua_setfield(L, -2, "key");
            lua_rawseti(L, out, c);
        }
        lua_pop(L, 2);
    } else {
        luaL_argexpected(L, lua_istable(L, idx), idx, "table of columns");
        int m = (int)luaL_len(L, idx);
        for (int c = 1; c <= m; c++) {
            lua_createtable(L, 0, 3);
            int spec = lua_rawgeti(L, idx, c);
            if (spec == LUA_TSTRING) {
                lua_setfield(L, -2, "key");
            } else if (spec == LUA_TTABLE) {
                if (lua_getfield(L, -1, "key") == LUA_TNIL) {
                    lua_pop(L, 1);
                    lua_rawgeti(L, -1, 1);
                }
                lua_setfield(L, -3, "key");
                if (lua_getfield(L, -1, "title") == LUA_TNIL) {
                    lua_pop(L, 1);
                    lua_rawgeti(L, -1, 2);
                }
                lua_setfield(L, -3, "title");
                if (lua_getfield(L, -1, "format") == LUA_TNIL) {
                    lua_pop(L, 1);
                    lua_rawgeti(L, -1, 3);
                }
                lua_setfield(L, -3, "format");
                lua_pop(L, 1);
            } else {
                luaL_error(L, "%s: column %d must be a key or a table {key=, title=, format=}, "
                           "got %s", t->what, c, luaL_typename(L, -1));
            }
            if (lua_getfield(L, -1, "key") != LUA_TSTRING)
                luaL_error(L, "%s: column %d has no key (a string)", t->what, c);
            lua_pop(L, 1);
            int ft = lua_getfield(L, -1, "format");
            if (ft != LUA_TNIL && ft != LUA_TSTRING && ft != LUA_TFUNCTION)
                luaL_error(L, "%s: column %d: format must be a string such as \"%%.4f\" or a "
                           "function, got %s", t->what, c, luaL_typename(L, -1));
            lua_pop(L, 1);
            lua_rawseti(L, out, ++n);
        }
    }
    if (n > MAX_COLUMNS) luaL_error(L, "%s: %d columns, at most %d", t->what, n, MAX_COLUMNS);
}

/* Pushes the text of a number with no format given: integers exactly,
 * floats with 4 significant digits in Markdown and 10 in CSV. */
static void push_number_text(lua_State *L, int idx, bool csv)
{
    if (lua_isinteger(L, idx)) {
        lua_pushfstring(L, "%I", (lua_Integer)lua_tointeger(L, idx));
        return;
    }
    double v = lua_tonumber(L, idx);
    char buf[64];
    snprintf(buf, sizeof buf, csv ? "%.10g" : "%.4g", v);
    lua_pushstring(L, buf);
}

/* Pushes the text of row[col.key]; the row and column tables are at the top
 * (row at -2, column at -1). */
static void push_cell(lua_State *L, const table_ctx *t, int row, int col)
{
    lua_getfield(L, col, "key");
    lua_gettable(L, row);
    int v = lua_gettop(L);
    int ft = lua_getfield(L, col, "format");
    if (lua_isnil(L, v)) {
        lua_pushliteral(L, "");
    } else if (ft == LUA_TFUNCTION) {
        lua_pushvalue(L, -1);
        lua_pushvalue(L, v);
        lua_pushvalue(L, row);
        lua_call(L, 2, 1);
        luaL_tolstring(L, -1, NULL);
        lua_remove(L, -2);
    } else if (ft == LUA_TSTRING && lua_type(L, v) == LUA_TNUMBER) {
        /* string.format, not the C printf: the format comes from the script. */
        lua_getglobal(L, "string");
        lua_getfield(L, -1, "format");
        lua_remove(L, -2);
        lua_pushvalue(L, v + 1);
        lua_pushvalue(L, v);
        lua_call(L, 2, 1);
    } else if (lua_type(L, v) == LUA_TNUMBER) {
        push_number_text(L, v, t->csv);
    } else {
        luaL_tolstring(L, v, NULL);
    }
    /* [value, format, text] -> [text] */
    lua_replace(L, v);
    lua_settop(L, v);
}

/* Pushes a matrix (array of arrays of strings): the header, then one line
 * per row. */
static void push_cells(lua_State *L, table_ctx *t)
{
    lua_createtable(L, t->n_rows + 1, 0);
    int m = lua_gettop(L);
    lua_createtable(L, t->n_cols, 0);
    for (int c = 1; c <= t->n_cols; c++) {
        lua_rawgeti(L, t->columns, c);
        if (t->csv || lua_getfield(L, -1, "title") == LUA_TNIL) {
            if (!t->csv) lua_pop(L, 1);
            lua_getfield(L, -1, "key");
        }
        luaL_tolstring(L, -1, NULL);  /* cells are strings: cell() relies on it */
        lua_replace(L, -3);
        lua_pop(L, 1);
        lua_rawseti(L, -2, c);
    }
    lua_rawseti(L, m, 1);
    for (int r = 1; r <= t->n_rows; r++) {
        if (lua_rawgeti(L, t->rows, r) != LUA_TTABLE)
            luaL_error(L, "%s: row %d must be a table, got %s", t->what, r, luaL_typename(L, -1));
        int row = lua_gettop(L);
        lua_createtable(L, t->n_cols, 0);
        for (int c = 1; c <= t->n_cols; c++) {
            lua_rawgeti(L, t->columns, c);
            push_cell(L, t, row, lua_gettop(L));
            lua_remove(L, -2);
            lua_rawseti(L, -2, c);
        }
        lua_rawseti(L, m, r + 1);
        lua_pop(L, 1);
    }
}

/* Reads rows (arg 1) and columns (arg 2 of the calling function, shifted by
 * `first`), and pushes the cell matrix. */
static void prepare(lua_State *L, table_ctx *t, int first)
{
    luaL_checktype(L, first, LUA_TTABLE);
    lua_settop(L, first + 1);  /* an absent columns argument reads as nil */
    t->rows = first;
    t->n_rows = (int)luaL_len(L, first);
    push_columns(L, t, first + 1);
    t->columns = lua_gettop(L);
    t->n_cols = (int)luaL_len(L, t->columns);
    push_cells(L, t);
}

/* ---- Markdown ----------------------------------------------------------------------- */

/* Characters on screen: UTF-8 continuation bytes take no column. */
static int display_width(const char *s, size_t len)
{
    int w = 0;
    for (size_t i = 0; i < len; i++) w += ((unsigned char)s[i] & 0xC0) != 0x80;
    return w;
}

/* Pipes would end a Markdown cell and newlines the row. */
static void escape_cell(lua_State *L, int matrix, int r, int c)
{
    lua_rawgeti(L, matrix, r);
    lua_rawgeti(L, -1, c);
    const char *s = lua_tostring(L, -1);
    if (strpbrk(s, "|\n\r")) {
        luaL_gsub(L, s, "|", "\\|");
        luaL_gsub(L, lua_tostring(L, -1), "\r\n", " ");
        luaL_gsub(L, lua_tostring(L, -1), "\n", " ");
        luaL_gsub(L, lua_tostring(L, -1), "\r", " ");
        lua_rawseti(L, -6, c);
        lua_pop(L, 3);
    }
    lua_pop(L, 2);
}

static const char *cell(lua_State *L, int matrix, int r, int c, size_t *len)
{
    lua_rawgeti(L, matrix, r);
    lua_rawgeti(L, -1, c);
    const char *s = lua_tolstring(L, -1, len);
    lua_pop(L, 2);  /* the string lives on in the matrix */
    return s;
}

/* A column is right-aligned when every value in it is a number. */
static bool numeric_column(lua_State *L, const table_ctx *t, int c)
{
    bool any = false;
    lua_rawgeti(L, t->columns, c);
    lua_getfield(L, -1, "key");
    for (int r = 1; r <= t->n_rows; r++) {
        lua_rawgeti(L, t->rows, r);
        lua_pushvalue(L, -2);
        int type = lua_gettable(L, -2);
        lua_pop(L, 2);
        if (type == LUA_TNIL) continue;
        if (type != LUA_TNUMBER) {
            lua_pop(L, 2);
            return false;
        }
        any = true;
    }
    lua_pop(L, 2);
    return any;
}

static void add_padded(luaL_Buffer *b, const char *s, size_t len, int width, bool right)
{
    int pad = width - display_width(s, len);
    if (right)
        for (int i = 0; i < pad; i++) luaL_addchar(b, ' ');
    luaL_addlstring(b, s, len);
    if (!right)
        for (int i = 0; i < pad; i++) luaL_addchar(b, ' ');
}

/* Pushes the Markdown text of the table. */
static void push_markdown(lua_State *L, const char *what, int first)
{
    table_ctx t = {.what = what};
    prepare(L, &t, first);
    int matrix = lua_gettop(L);
    int width[MAX_COLUMNS];
    bool right[MAX_COLUMNS];
    for (int c = 1; c <= t.n_cols; c++) {
        right[c - 1] = numeric_column(L, &t, c);
        width[c - 1] = 3;  /* "---" is the shortest separator */
        for (int r = 1; r <= t.n_rows + 1; r++) {
            escape_cell(L, matrix, r, c);
            size_t len;
            const char *s = cell(L, matrix, r, c, &len);
            int w = display_width(s, len);
            if (w > width[c - 1]) width[c - 1] = w;
        }
    }
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    for (int r = 1; r <= t.n_rows + 1; r++) {
        luaL_addchar(&b, '|');
        for (int c = 1; c <= t.n_cols; c++) {
            size_t len;
            const char *s = cell(L, matrix, r, c, &len);
            luaL_addchar(&b, ' ');
            add_padded(&b, s, len, width[c - 1], r > 1 && right[c - 1]);
            luaL_addstring(&b, " |");
        }
        luaL_addchar(&b, '\n');
        if (r == 1) {
            luaL_addchar(&b, '|');
            for (int c = 0; c < t.n_cols; c++) {
                if (!right[c]) luaL_addchar(&b, ':');
                for (int i = 0; i < width[c] + 1; i++) luaL_addchar(&b, '-');
                luaL_addstring(&b, right[c] ? ":|" : "|");
            }
            luaL_addchar(&b, '\n');
        }
    }
    luaL_pushresult(&b);
}

/* fm.table(rows, columns) -> Markdown text */
static int l_table(lua_State *L)
{
    push_markdown(L, "fm.table", 1);
    return 1;
}

/* ---- files ----------------------------------------------------------------------------- */

static void write_file(lua_State *L, const char *what, const char *path, const char *data,
                       size_t len)
{
    fm_lua_make_parent(L, path, what);
    if (fm_file_write_atomic(path, data, len) != FM_OK) fm_lua_core_error(L, what);
}

static void add_csv_field(luaL_Buffer *b, const char *s, size_t len)
{
    if (!strpbrk(s, ",\"\r\n")) {
        luaL_addlstring(b, s, len);
        return;
    }
    luaL_addchar(b, '"');
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '"') luaL_addchar(b, '"');
        luaL_addchar(b, s[i]);
    }
    luaL_addchar(b, '"');
}

/* fm.write_csv(path, rows, columns): the header is the column keys. */
static int l_write_csv(lua_State *L)
{
    const char *what = "fm.write_csv";
    const char *path = luaL_checkstring(L, 1);
    table_ctx t = {.what = what, .csv = true};
    prepare(L, &t, 2);
    int matrix = lua_gettop(L);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    for (int r = 1; r <= t.n_rows + 1; r++) {
        for (int c = 1; c <= t.n_cols; c++) {
            size_t len;
            const char *s = cell(L, matrix, r, c, &len);
            if (c > 1) luaL_addchar(&b, ',');
            add_csv_field(&b, s, len);
        }
        luaL_addchar(&b, '\n');
    }
    luaL_pushresult(&b);
    size_t len;
    const char *text = lua_tolstring(L, -1, &len);
    write_file(L, what, path, text, len);
    lua_pushvalue(L, 1);
    return 1;
}

/* fm.write_markdown(path, text or {lines...}) */
static int l_write_markdown(lua_State *L)
{
    const char *what = "fm.write_markdown";
    const char *path = luaL_checkstring(L, 1);
    luaL_Buffer b;
    if (lua_type(L, 2) == LUA_TTABLE) {
        int n = (int)luaL_len(L, 2);
        luaL_buffinit(L, &b);
        for (int i = 1; i <= n; i++) {
            if (lua_geti(L, 2, i) != LUA_TSTRING && !lua_isnumber(L, -1))
                return luaL_error(L, "%s: line %d must be a string, got %s", what, i,
                                  luaL_typename(L, -1));
            luaL_addvalue(&b);
            luaL_addchar(&b, '\n');
        }
        luaL_pushresult(&b);
    } else {
        luaL_checkstring(L, 2);
        lua_pushvalue(L, 2);
    }
    size_t len;
    const char *text = lua_tolstring(L, -1, &len);
    if (len == 0 || text[len - 1] != '\n') {
        lua_pushliteral(L, "\n");
        lua_concat(L, 2);
        text = lua_tolstring(L, -1, &len);
    }
    write_file(L, what, path, text, len);
    lua_pushvalue(L, 1);
    return 1;
}

/* ---- plots ------------------------------------------------------------------------------- */

static const char *opt_string(lua_State *L, int t, const char *key, const char *def)
{
    int type = lua_getfield(L, t, key);
    if (type == LUA_TNIL) {
        lua_pop(L, 1);
        return def;
    }
    if (type != LUA_TSTRING)
        luaL_error(L, "fm.plot: option '%s' must be a string, got %s", key, luaL_typename(L, -1));
    return lua_tostring(L, -1);  /* left on the stack: stays alive */
}

/* Reads arr[1..n] as doubles into out; nil and holes are NaN (gaps). */
static void read_values(lua_State *L, int arr, double *out, int n, const char *what, int s)
{
    for (int i = 0; i < n; i++) {
        int type = lua_rawgeti(L, arr, i + 1);
        if (type == LUA_TNUMBER)
            out[i] = lua_tonumber(L, -1);
        else if (type == LUA_TNIL)
            out[i] = NAN;
        else
            luaL_error(L, "fm.plot: %s %d, value %d must be a number, got %s", what, s, i + 1,
                       luaL_typename(L, -1));
        lua_pop(L, 1);
    }
}

/* fm.plot{file=, series={{name=, y={...}}, ...}, title=, xlabel=, ylabel=, x=, mark=, mark_label=} */
static int l_plot(lua_State *L)
{
    static const char *const keys[] = {"file", "series", "title", "xlabel", "ylabel", "x",
                                       "mark", "mark_label", NULL};
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    fm_lua_check_keys(L, 1, keys, "fm.plot");
    const char *file = opt_string(L, 1, "file", NULL);
    if (!file) return luaL_error(L, "fm.plot: option 'file' (the PNG to write) is required");
    const char *title = opt_string(L, 1, "title", "");
    const char *xlabel = opt_string(L, 1, "xlabel", "epoch");
    const char *ylabel = opt_string(L, 1, "ylabel", "");
    const char *mark_label = opt_string(L, 1, "mark_label", NULL);
    double mark = NAN;
    if (lua_getfield(L, 1, "mark") != LUA_TNIL) {
        if (lua_type(L, -1) != LUA_TNUMBER)
            return luaL_error(L, "fm.plot: option 'mark' must be a number (an x to mark), got %s",
                              luaL_typename(L, -1));
        mark = lua_tonumber(L, -1);
    }
    lua_pop(L, 1);

    if (lua_getfield(L, 1, "series") != LUA_TTABLE)
        return luaL_error(L, "fm.plot: option 'series' must be a table of {name=, y={...}}, got %s",
                          luaL_typename(L, -1));
    int series = lua_gettop(L);
    int n_series = (int)luaL_len(L, series);
    if (n_series < 1) return luaL_error(L, "fm.plot: 'series' is empty: nothing to draw");

    /* Each series' y table and name, normalised into two arrays on the stack. */
    lua_createtable(L, n_series, 0);
    int ys_tab = lua_gettop(L);
    lua_createtable(L, n_series, 0);
    int names_tab = lua_gettop(L);
    int n_points = 0;
    for (int s = 1; s <= n_series; s++) {
        if (lua_rawgeti(L, series, s) != LUA_TTABLE)
            return luaL_error(L, "fm.plot: series %d must be a table {name=, y={...}}, got %s", s,
                              luaL_typename(L, -1));
        if (lua_getfield(L, -1, "name") == LUA_TNIL) {
            lua_pop(L, 1);
            lua_rawgeti(L, -1, 1);
        }
        if (lua_type(L, -1) != LUA_TSTRING)
            return luaL_error(L, "fm.plot: series %d needs a name (a string)", s);
        lua_rawseti(L, names_tab, s);
        if (lua_getfield(L, -1, "y") == LUA_TNIL) {
            lua_pop(L, 1);
            lua_rawgeti(L, -1, 2);
        }
        if (lua_type(L, -1) != LUA_TTABLE)
            return luaL_error(L, "fm.plot: series %d needs y, an array of numbers", s);
        int len = (int)luaL_len(L, -1);
        if (len > n_points) n_points = len;
        lua_rawseti(L, ys_tab, s);
        lua_pop(L, 1);
    }
    int x_given = lua_getfield(L, 1, "x") != LUA_TNIL;
    int x_tab = lua_gettop(L);
    if (x_given) {
        if (lua_type(L, x_tab) != LUA_TTABLE)
            return luaL_error(L, "fm.plot: option 'x' must be an array of numbers");
        if ((int)luaL_len(L, x_tab) < n_points)
            return luaL_error(L, "fm.plot: 'x' has %d values but a series has %d",
                              (int)luaL_len(L, x_tab), n_points);
    }
    if (n_points < 1) return luaL_error(L, "fm.plot: every series is empty: nothing to draw");

    /* Work arrays as userdata: collected even when an error is raised below. */
    double *x = lua_newuserdatauv(L, sizeof(double) * (size_t)n_points, 0);
    double *values = lua_newuserdatauv(L, sizeof(double) * (size_t)n_points * (size_t)n_series, 0);
    const double **ys = lua_newuserdatauv(L, sizeof(double *) * (size_t)n_series, 0);
    const char **labels = lua_newuserdatauv(L, sizeof(char *) * (size_t)n_series, 0);
    if (x_given)
        read_values(L, x_tab, x, n_points, "x", 0);
    else
        for (int i = 0; i < n_points; i++) x[i] = i + 1;
    for (int s = 0; s < n_series; s++) {
        double *y = values + (size_t)s * (size_t)n_points;
        lua_rawgeti(L, ys_tab, s + 1);
        read_values(L, lua_gettop(L), y, n_points, "series", s + 1);
        lua_pop(L, 1);
        ys[s] = y;
        lua_rawgeti(L, names_tab, s + 1);
        labels[s] = lua_tostring(L, -1);  /* kept alive by names_tab */
        lua_pop(L, 1);
    }
    fm_lua_make_parent(L, file, "fm.plot");
    if (fm_report_curves(file, title, xlabel, ylabel, x, ys, labels, n_series, n_points, mark,
                         mark_label) != FM_OK)
        return fm_lua_core_error(L, "fm.plot");
    lua_pushstring(L, file);
    return 1;
}

/* ---- small utilities ------------------------------------------------------------------------ */

static int l_mkdir(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    if (fm_mkdirs(path) != FM_OK) return fm_lua_core_error(L, "fm.mkdir");
    lua_pushvalue(L, 1);
    return 1;
}

static int l_now(lua_State *L)
{
    lua_pushnumber(L, fm_now());
    return 1;
}

void fm_lua_open_results(lua_State *L)
{
    static const luaL_Reg funcs[] = {
        {"table", l_table}, {"write_csv", l_write_csv}, {"write_markdown", l_write_markdown},
        {"plot", l_plot},   {"mkdir", l_mkdir},         {"now", l_now},
        {NULL, NULL},
    };
    luaL_setfuncs(L, funcs, 0);
}
