/* file.c — atomic writes, mkdir -p, whole-file reads, CSV fields. */
#include "fm/fm_io.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* Temporary files not yet committed or removed, for fm_atomic_cleanup():
 * a slot is 0 (free), 1 (being filled) or 2 (holds a name). */
#define TMP_SLOTS 32
static struct {
    int state;
    char name[PATH_MAX + 64];
} tmp_slots[TMP_SLOTS];

static void tmp_track(const char *name)
{
    for (int i = 0; i < TMP_SLOTS; i++) {
        int free_slot = 0;
        if (__atomic_compare_exchange_n(&tmp_slots[i].state, &free_slot, 1, false,
                                        __ATOMIC_ACQUIRE, __ATOMIC_RELAXED)) {
            snprintf(tmp_slots[i].name, sizeof tmp_slots[i].name, "%s", name);
            __atomic_store_n(&tmp_slots[i].state, 2, __ATOMIC_RELEASE);
            return;
        }
    }
    /* More than TMP_SLOTS writes at once: this one goes untracked. */
}

static void tmp_forget(const char *name)
{
    for (int i = 0; i < TMP_SLOTS; i++)
        if (__atomic_load_n(&tmp_slots[i].state, __ATOMIC_ACQUIRE) == 2 &&
            strcmp(tmp_slots[i].name, name) == 0) {
            __atomic_store_n(&tmp_slots[i].state, 0, __ATOMIC_RELEASE);
            return;
        }
}

void fm_atomic_cleanup(void)
{
    /* Only unlink() here: this runs in signal handlers. */
    for (int i = 0; i < TMP_SLOTS; i++)
        if (__atomic_load_n(&tmp_slots[i].state, __ATOMIC_ACQUIRE) == 2) unlink(tmp_slots[i].name);
}

/* Creates "<path>.tmp.<pid>.<random>" anew (never an existing file, never
 * through a symbolic link) and returns its descriptor, or -1 with errno. */
static int tmp_create(const char *path, char *out, size_t out_len)
{
    for (int attempt = 0; attempt < 16; attempt++) {
        uint32_t r;
        if (getrandom(&r, sizeof r, GRND_NONBLOCK) != sizeof r) {
            static uint32_t counter;
            r = __atomic_add_fetch(&counter, 1, __ATOMIC_RELAXED) * 2654435761u ^ (uint32_t)time(NULL);
        }
        int n = snprintf(out, out_len, "%s.tmp.%ld.%08x", path, (long)getpid(), r);
        if (n < 0 || (size_t)n >= out_len) {
            errno = ENAMETOOLONG;
            return -1;
        }
        int fd = open(out, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0666);
        if (fd >= 0 || errno != EEXIST) return fd;
    }
    return -1;
}

/* The rename is only durable once the directory entry is on disk too; a
 * failure here is not worth failing the write for (some file systems refuse
 * fsync on directories). */
static void sync_parent_dir(const char *path)
{
    char dir[PATH_MAX];
    const char *slash = strrchr(path, '/');
    if (slash == NULL) {
        strcpy(dir, ".");
    } else if (slash == path) {
        strcpy(dir, "/");
    } else {
        size_t n = (size_t)(slash - path);
        if (n >= sizeof dir)
            return;
        memcpy(dir, path, n);
        dir[n] = '\0';
    }
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        (void)fsync(fd);
        close(fd);
    }
}

FILE *fm_atomic_open(const char *path, char *tmp_path_out, size_t tmp_len)
{
    FM_ASSERT(path != NULL && tmp_path_out != NULL);
    int fd = tmp_create(path, tmp_path_out, tmp_len);
    if (fd < 0) {
        fm_error_set(FM_ERR_IO, "cannot write %s (temporary file %s): %s", path, tmp_path_out,
                     strerror(errno));
        return NULL;
    }
    FILE *f = fdopen(fd, "wb");
    if (f == NULL) {
        int e = errno;
        close(fd);
        unlink(tmp_path_out);
        fm_error_set(FM_ERR_IO, "cannot write %s: %s", path, strerror(e));
        return NULL;
    }
    tmp_track(tmp_path_out);
    return f;
}

void fm_atomic_abort(FILE *f, const char *tmp_path)
{
    if (f != NULL)
        fclose(f);
    if (tmp_path != NULL) {
        unlink(tmp_path);
        tmp_forget(tmp_path);
    }
}

/* The end of every atomic write, once the temporary file is flushed, synced
 * and closed with error `e` (0: none): rename it over `path`, or remove it. */
static fm_status finish_commit(int e, const char *tmp_path, const char *path)
{
    tmp_forget(tmp_path);
    if (e != 0) {
        unlink(tmp_path);
        return fm_error_set(FM_ERR_IO, "cannot write %s: %s", path, strerror(e));
    }
    if (rename(tmp_path, path) != 0) {
        e = errno;
        unlink(tmp_path);
        return fm_error_set(FM_ERR_IO, "cannot rename %s to %s: %s", tmp_path, path, strerror(e));
    }
    sync_parent_dir(path);
    return FM_OK;
}

fm_status fm_atomic_commit(FILE *f, const char *tmp_path, const char *path)
{
    FM_ASSERT(f != NULL && tmp_path != NULL && path != NULL);
    int e = 0;
    if (fflush(f) != 0 || ferror(f))
        e = errno ? errno : EIO;
    if (e == 0 && fsync(fileno(f)) != 0)
        e = errno;
    if (fclose(f) != 0 && e == 0)
        e = errno ? errno : EIO;
    return finish_commit(e, tmp_path, path);
}

fm_status fm_file_commit(const char *tmp_path, const char *path)
{
    FM_ASSERT(tmp_path != NULL && path != NULL);
    int fd = open(tmp_path, O_RDWR | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        unlink(tmp_path);
        tmp_forget(tmp_path);
        return fm_error_set(FM_ERR_IO, "cannot write %s (temporary file %s): %s", path, tmp_path,
                            strerror(e));
    }
    int e = 0;
    if (fsync(fd) != 0)
        e = errno;
    if (close(fd) != 0 && e == 0)
        e = errno;
    return finish_commit(e, tmp_path, path);
}

fm_status fm_file_write_atomic(const char *path, const void *data, size_t len)
{
    FM_ASSERT(path != NULL && (data != NULL || len == 0));
    char tmp[PATH_MAX + 64];
    FILE *f = fm_atomic_open(path, tmp, sizeof tmp);
    if (f == NULL)
        return fm_error_status();
    if (len > 0 && fwrite(data, 1, len, f) != len) {
        int e = errno ? errno : EIO;
        fm_atomic_abort(f, tmp);
        return fm_error_set(FM_ERR_IO, "cannot write %s: %s", path, strerror(e));
    }
    return fm_atomic_commit(f, tmp, path);
}

fm_status fm_mkdirs(const char *path)
{
    FM_ASSERT(path != NULL);
    size_t n = strlen(path);
    if (n == 0)
        return FM_OK;
    if (n >= PATH_MAX)
        return fm_error_set(FM_ERR_IO, "cannot create directory %s: path too long", path);
    char buf[PATH_MAX];
    memcpy(buf, path, n + 1);
    /* Each prefix ending before a '/', then the whole path. */
    for (size_t i = 1; i <= n; i++) {
        if (i < n && buf[i] != '/')
            continue;
        char saved = buf[i];
        buf[i] = '\0';
        if (mkdir(buf, 0777) != 0 && errno != EEXIST) {
            int e = errno;
            return fm_error_set(FM_ERR_IO, "cannot create directory %s: %s", buf, strerror(e));
        }
        buf[i] = saved;
    }
    struct stat st;
    if (stat(path, &st) != 0)
        return fm_error_set(FM_ERR_IO, "cannot create directory %s: %s", path, strerror(errno));
    if (!S_ISDIR(st.st_mode))
        return fm_error_set(FM_ERR_IO, "cannot create directory %s: a file of that name exists",
                            path);
    return FM_OK;
}

fm_status fm_file_read_all(const char *path, size_t max_bytes, char **data_out, size_t *len_out)
{
    FM_ASSERT(path != NULL && data_out != NULL && len_out != NULL);
    *data_out = NULL;
    *len_out = 0;
    /* Not blocking, and checked to be a regular file before any read: a
     * FIFO is refused, not waited on. */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) return fm_error_set(FM_ERR_IO, "cannot open %s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return fm_error_set(FM_ERR_IO, "cannot read %s: not a regular file", path);
    }
    FILE *f = fdopen(fd, "rb");
    if (f == NULL) {
        int e = errno;
        close(fd);
        return fm_error_set(FM_ERR_IO, "cannot open %s: %s", path, strerror(e));
    }
    if ((uint64_t)st.st_size > (uint64_t)max_bytes) {
        fclose(f);
        return fm_error_set(FM_ERR_FORMAT, "%s: %lld bytes, more than the %zu this reader accepts",
                            path, (long long)st.st_size, max_bytes);
    }
    size_t len = (size_t)st.st_size;
    char *buf = malloc(len + 1);
    if (buf == NULL) {
        fclose(f);
        return fm_error_set(FM_ERR_NOMEM, "%s: cannot allocate %zu bytes", path, len + 1);
    }
    size_t got = fread(buf, 1, len, f);
    int bad = ferror(f);
    fclose(f);
    if (bad || got != len) {
        free(buf);
        return fm_error_set(FM_ERR_IO, "cannot read %s: %s", path,
                            bad ? strerror(errno) : "file changed while reading");
    }
    buf[len] = '\0';
    *data_out = buf;
    *len_out = len;
    return FM_OK;
}

void fm_csv_write_field(FILE *f, const char *s)
{
    FM_ASSERT(f != NULL);
    if (s == NULL)
        s = "";
    if (strpbrk(s, ",\"\r\n") == NULL) {
        fputs(s, f);
        return;
    }
    fputc('"', f);
    for (const char *p = s; *p; p++) {
        if (*p == '"')
            fputc('"', f);
        fputc(*p, f);
    }
    fputc('"', f);
}
