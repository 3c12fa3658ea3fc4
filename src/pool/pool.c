/* The hot model pool (include/zerostart/pool.h): the pool directory, its lock, capacity and
 * least-recently-used eviction, filling segments from storage, attaching, crash recovery. */
#include "zerostart/pool.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "gpu/gpu_rt.h"
#include "pool/segment.h"

#define POOL_DEFAULT_DIR "/dev/shm/zerostart-pool"

struct zs_pool {
    char dir[PATH_MAX];
    uint64_t capacity;
    int threads;
    int lock_fd;                  /* dir/.lock: held LOCK_EX while deciding what to evict or create */
};

struct zs_pool_model {
    int fd;                       /* holds LOCK_SH while attached */
    void *map;
    uint64_t map_bytes;
    zs_seg_header_t *hdr;
    int pinned;
    int threads;
};

static int64_t pool_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int pool_errno(zs_err_t *err, const char *op, const char *path) {
    int e = errno;
    return zs_err_set(err, zs_status_from_errno(e), "pool: %s %s: %s", op, path, strerror(e));
}

static int pool_lock(zs_pool_t *p) { return flock(p->lock_fd, LOCK_EX); }
static void pool_unlock(zs_pool_t *p) { flock(p->lock_fd, LOCK_UN); }

/* Reads a segment's header (fixed part, and the whole header when `whole`). */
static zs_seg_header_t *pool_read_header(int fd, int whole) {
    zs_seg_header_t fixed;
    if (pread(fd, &fixed, sizeof fixed, 0) != (ssize_t)sizeof fixed) return NULL;
    if (memcmp(fixed.magic, ZS_SEG_MAGIC, 8) != 0 || fixed.version != ZS_SEG_VERSION ||
        fixed.nfiles > ZS_SEG_MAX_FILES)
        return NULL;
    size_t n = sizeof fixed + (whole ? fixed.nfiles * sizeof(zs_seg_file_t) : 0);
    zs_seg_header_t *h = malloc(n);
    if (h == NULL) return NULL;
    if (pread(fd, h, n, 0) != (ssize_t)n) {
        free(h);
        return NULL;
    }
    h->model_dir[sizeof h->model_dir - 1] = '\0';
    return h;
}

/* Frees segments that a dead process left half-filled, and files that are not segments. */
static void pool_recover(zs_pool_t *p) {
    DIR *d = opendir(p->dir);
    if (d == NULL) return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        size_t l = strlen(e->d_name);
        if (l < 5 || strcmp(e->d_name + l - 4, ".seg") != 0) continue;
        char path[PATH_MAX + 300];
        snprintf(path, sizeof path, "%s/%s", p->dir, e->d_name);
        int fd = open(path, O_RDWR | O_CLOEXEC);
        if (fd < 0) continue;
        if (flock(fd, LOCK_EX | LOCK_NB) == 0) {
            zs_seg_header_t *h = pool_read_header(fd, 0);
            if (h == NULL || h->state != ZS_POOL_READY) unlink(path); /* crashed filler or garbage */
            free(h);
            flock(fd, LOCK_UN);
        }
        close(fd);
    }
    closedir(d);
}

int zs_pool_open(const zs_pool_opts_t *opts, zs_pool_t **out, zs_err_t *err) {
    *out = NULL;
    zs_pool_t *p = calloc(1, sizeof *p);
    if (p == NULL) return zs_err_set(err, ZS_ENOMEM, "pool: out of memory");
    const char *dir = opts && opts->dir ? opts->dir : getenv("ZS_POOL_DIR");
    snprintf(p->dir, sizeof p->dir, "%s", dir && *dir ? dir : POOL_DEFAULT_DIR);
    p->capacity = opts ? opts->capacity : 0;
    p->threads = opts && opts->threads > 0 ? opts->threads : 0;
    if (mkdir(p->dir, 0700) != 0 && errno != EEXIST) {
        int rc = pool_errno(err, "mkdir", p->dir);
        free(p);
        return rc;
    }
    char path[PATH_MAX + 16];
    snprintf(path, sizeof path, "%s/.lock", p->dir);
    p->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (p->lock_fd < 0) {
        int rc = pool_errno(err, "open", path);
        free(p);
        return rc;
    }
    pool_lock(p);
    pool_recover(p);
    pool_unlock(p);
    *out = p;
    return ZS_OK;
}

void zs_pool_close(zs_pool_t *p) {
    if (p == NULL) return;
    close(p->lock_fd);
    free(p);
}

static int pool_entry_cmp(const void *a, const void *b) {
    const zs_pool_entry_t *x = a, *y = b;
    return x->last_used_ns < y->last_used_ns ? -1 : x->last_used_ns > y->last_used_ns;
}

static int pool_scan(zs_pool_t *p, zs_pool_entry_t **out, size_t *n, zs_err_t *err) {
    *out = NULL;
    *n = 0;
    DIR *d = opendir(p->dir);
    if (d == NULL) return pool_errno(err, "opendir", p->dir);
    size_t cap = 0;
    int rc = ZS_OK;
    struct dirent *e;
    while ((e = readdir(d)) != NULL && rc == ZS_OK) {
        size_t l = strlen(e->d_name);
        if (l < 5 || strcmp(e->d_name + l - 4, ".seg") != 0) continue;
        char path[sizeof((zs_pool_entry_t *)0)->segment];
        if (snprintf(path, sizeof path, "%s/%s", p->dir, e->d_name) >= (int)sizeof path) continue;
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) continue;
        zs_seg_header_t *h = pool_read_header(fd, 0);
        if (h != NULL) {
            if (*n == cap) {
                cap = cap ? cap * 2 : 16;
                zs_pool_entry_t *ne = realloc(*out, cap * sizeof *ne);
                if (ne == NULL) rc = zs_err_set(err, ZS_ENOMEM, "pool: out of memory");
                else *out = ne;
            }
            if (rc == ZS_OK) {
                zs_pool_entry_t *x = &(*out)[(*n)++];
                memset(x, 0, sizeof *x);
                snprintf(x->model_dir, sizeof x->model_dir, "%s", h->model_dir);
                snprintf(x->segment, sizeof x->segment, "%s", path);
                x->bytes = h->data_bytes;
                x->state = (int)h->state;
                x->last_used_ns = h->last_used_ns;
                x->content_hash = h->content_hash;
                if (flock(fd, LOCK_EX | LOCK_NB) == 0) flock(fd, LOCK_UN);
                else x->in_use = 1;
            }
            free(h);
        }
        close(fd);
    }
    closedir(d);
    if (rc == ZS_OK && *n > 1) qsort(*out, *n, sizeof **out, pool_entry_cmp);
    return rc;
}

int zs_pool_list(zs_pool_t *p, zs_pool_entry_t **out, size_t *n, zs_err_t *err) {
    return pool_scan(p, out, n, err);
}

/* Removes the segment at path if nobody uses it. 1: removed, 0: in use, <0 error. */
static int pool_remove_if_unused(const char *path) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return errno == ENOENT ? 1 : -1;
    int removed = 0;
    if (flock(fd, LOCK_EX | LOCK_NB) == 0) {
        removed = unlink(path) == 0 || errno == ENOENT ? 1 : -1;
        flock(fd, LOCK_UN);
    }
    close(fd);
    return removed;
}

/* With the pool lock held: evicts least recently used unused segments (other than `keep`)
 * until `need` more bytes fit. */
static int pool_make_room(zs_pool_t *p, uint64_t need, const char *keep, zs_err_t *err) {
    if (p->capacity == 0) return ZS_OK;
    if (need > p->capacity)
        return zs_err_set(err, ZS_ENOMEM, "pool: the model needs %llu bytes but the pool holds %llu",
                          (unsigned long long)need, (unsigned long long)p->capacity);
    zs_pool_entry_t *e;
    size_t n;
    int rc = pool_scan(p, &e, &n, err);
    if (rc != ZS_OK) return rc;
    uint64_t used = 0, pinned = 0;
    for (size_t i = 0; i < n; i++)
        if (strcmp(e[i].segment, keep) != 0) used += e[i].bytes;
    for (size_t i = 0; i < n && used + need > p->capacity; i++) {
        if (strcmp(e[i].segment, keep) == 0) continue;
        if (pool_remove_if_unused(e[i].segment) == 1) used -= e[i].bytes;
        else pinned += e[i].bytes;
    }
    if (used + need > p->capacity)
        rc = zs_err_set(err, ZS_ENOMEM,
                        "pool: %llu of %llu bytes are held by models in use; %llu more are needed",
                        (unsigned long long)used, (unsigned long long)p->capacity, (unsigned long long)need);
    (void)pinned;
    free(e);
    return rc;
}

static void pool_model_free(zs_pool_model_t *m) {
    if (m == NULL) return;
    if (m->pinned) zs_gpu_host_unregister(m->map);
    if (m->map != NULL) munmap(m->map, m->map_bytes);
    if (m->fd >= 0) close(m->fd); /* releases the lock */
    free(m);
}

/* Maps an opened, locked segment whose header `h` was read. Takes fd (closed on failure). */
static int pool_map(zs_pool_t *p, int fd, zs_seg_header_t *h, int writable, zs_pool_model_t **out, zs_err_t *err) {
    zs_pool_model_t *m = calloc(1, sizeof *m);
    if (m == NULL) {
        close(fd);
        return zs_err_set(err, ZS_ENOMEM, "pool: out of memory");
    }
    m->fd = fd;
    m->threads = p->threads ? p->threads : 8;
    m->map_bytes = h->header_bytes + h->data_bytes;
    m->map = mmap(NULL, m->map_bytes, PROT_READ | (writable ? PROT_WRITE : 0), MAP_SHARED, fd, 0);
    if (m->map == MAP_FAILED) {
        m->map = NULL;
        int rc = zs_err_set(err, ZS_ENOMEM, "pool: mmap of %llu bytes failed: %s", (unsigned long long)m->map_bytes,
                            strerror(errno));
        pool_model_free(m);
        return rc;
    }
    m->hdr = m->map;
    *out = m;
    return ZS_OK;
}

static int pool_seg_path(zs_pool_t *p, const zs_ckpt_t *ck, char *path, size_t cap, zs_seg_header_t *now,
                         zs_err_t *err) {
    char name[64];
    int rc = zs_seg_name(ck->dir, now->model_dir, sizeof now->model_dir, name, sizeof name, err);
    if (rc == ZS_OK && snprintf(path, cap, "%s/%s", p->dir, name) >= (int)cap)
        rc = zs_err_set(err, ZS_ERANGE, "pool: path too long");
    return rc;
}

/* Tries to attach an existing segment. ZS_ENOENT: none; ZS_ESTATE: stale or being filled. */
static int pool_try_attach(zs_pool_t *p, const char *path, const zs_seg_header_t *now, int wait,
                           zs_pool_model_t **out, zs_err_t *err) {
    int fd = open(path, O_RDWR | O_CLOEXEC);
    if (fd < 0) return errno == ENOENT ? zs_err_set(err, ZS_ENOENT, "pool: no segment for %s", now->model_dir)
                                       : pool_errno(err, "open", path);
    if (flock(fd, LOCK_SH | (wait ? 0 : LOCK_NB)) != 0) {
        close(fd);
        return zs_err_set(err, ZS_ESTATE, "pool: %s is being filled", now->model_dir);
    }
    zs_seg_header_t *h = pool_read_header(fd, 1);
    int rc = ZS_OK;
    if (h == NULL || h->state != ZS_POOL_READY)
        rc = zs_err_set(err, ZS_ESTATE, "pool: segment %s is %s", path, h ? "incomplete" : "damaged");
    else if (!zs_seg_matches(h, now, err))
        rc = ZS_ESTATE;
    if (rc == ZS_OK) {
        rc = pool_map(p, fd, h, 1, out, err);
        if (rc == ZS_OK) (*out)->hdr->last_used_ns = pool_now_ns();
    } else {
        close(fd);
    }
    free(h);
    return rc;
}

int zs_pool_attach(zs_pool_t *p, const zs_ckpt_t *ck, zs_pool_model_t **out, zs_err_t *err) {
    *out = NULL;
    zs_seg_header_t *now = calloc(1, sizeof *now + ck->nfiles * sizeof(zs_seg_file_t));
    if (now == NULL) return zs_err_set(err, ZS_ENOMEM, "pool: out of memory");
    char path[PATH_MAX + 64];
    int rc = zs_seg_identity(ck, now, err);
    if (rc == ZS_OK) rc = pool_seg_path(p, ck, path, sizeof path, now, err);
    if (rc == ZS_OK) rc = pool_try_attach(p, path, now, 0, out, err);
    free(now);
    return rc;
}

/* Creates and fills the segment at path (pool lock held on entry; released during the fill). */
static int pool_fill(zs_pool_t *p, const zs_ckpt_t *ck, const char *path, zs_seg_header_t *now,
                     zs_pool_model_t **out, zs_err_t *err) {
    uint64_t data_bytes;
    int rc = zs_load_alloc_bytes(ck, &data_bytes, err);
    if (rc == ZS_OK) rc = pool_make_room(p, data_bytes, path, err);
    if (rc != ZS_OK) {
        pool_unlock(p);
        return rc;
    }
    int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0 && errno == EEXIST) { /* another process created it since we looked: attach to it */
        pool_unlock(p);
        return ZS_EBUSY;
    }
    if (fd < 0 || flock(fd, LOCK_EX) != 0) {
        rc = pool_errno(err, "create", path);
        if (fd >= 0) close(fd);
        pool_unlock(p);
        return rc;
    }
    now->header_bytes = zs_seg_header_bytes(now->nfiles);
    now->data_bytes = data_bytes;
    now->state = ZS_POOL_FILLING;
    uint64_t total = now->header_bytes + data_bytes;
    int e = posix_fallocate(fd, 0, (off_t)total); /* reserve the memory now: ENOSPC here, not SIGBUS later */
    if (e != 0) {
        rc = zs_err_set(err, ZS_ENOMEM, "pool: cannot reserve %llu bytes in %s: %s", (unsigned long long)total,
                        p->dir, strerror(e));
    } else if (pwrite(fd, now, sizeof *now + now->nfiles * sizeof(zs_seg_file_t), 0) < 0) {
        rc = pool_errno(err, "write", path);
    }
    pool_unlock(p); /* others may use the pool while this one fills; the segment lock marks it busy */
    zs_pool_model_t *m = NULL;
    if (rc == ZS_OK) rc = pool_map(p, fd, now, 1, &m, err);
    else close(fd);
    if (rc == ZS_OK) {
        zs_load_opts_t o;
        zs_load_opts_default(&o);
        o.threads = p->threads;
        o.host_dest = (char *)m->map + now->header_bytes;
        zs_weights_t *w = NULL;
        rc = zs_load(ck, &o, &w, err);
        zs_weights_free(w);
    }
    if (rc == ZS_OK) {
        m->hdr->content_hash = zs_seg_hash((char *)m->map + now->header_bytes, data_bytes, m->threads);
        m->hdr->filled_ns = m->hdr->last_used_ns = pool_now_ns();
        __atomic_store_n(&m->hdr->state, (uint32_t)ZS_POOL_READY, __ATOMIC_RELEASE);
        if (flock(m->fd, LOCK_SH) != 0) rc = pool_errno(err, "flock", path);
    }
    if (rc != ZS_OK) {
        unlink(path);
        pool_model_free(m);
        return rc;
    }
    *out = m;
    return ZS_OK;
}

int zs_pool_acquire(zs_pool_t *p, const zs_ckpt_t *ck, zs_pool_model_t **out, zs_pool_source_t *how,
                    zs_err_t *err) {
    *out = NULL;
    zs_seg_header_t *now = calloc(1, sizeof *now + ck->nfiles * sizeof(zs_seg_file_t));
    if (now == NULL) return zs_err_set(err, ZS_ENOMEM, "pool: out of memory");
    char path[PATH_MAX + 64];
    int rc = zs_seg_identity(ck, now, err);
    if (rc == ZS_OK) rc = pool_seg_path(p, ck, path, sizeof path, now, err);
    zs_pool_source_t src = ZS_POOL_HIT;
    for (int attempt = 0; rc == ZS_OK && attempt < 8; attempt++) {
        zs_err_t aerr = {0};
        /* Waits while another process fills it, then checks it. */
        rc = pool_try_attach(p, path, now, 1, out, &aerr);
        if (rc == ZS_OK) break;
        if (rc != ZS_ENOENT && rc != ZS_ESTATE) {
            if (err != NULL && err->code == ZS_OK) *err = aerr;
            break;
        }
        if (pool_lock(p) != 0) {
            rc = pool_errno(err, "lock", p->dir);
            break;
        }
        if (rc == ZS_ESTATE) {
            /* Stale (or left incomplete): unlink it. Processes that have it mapped keep their
             * consistent old copy; new users get a fresh one. */
            if (unlink(path) != 0 && errno != ENOENT) {
                rc = pool_errno(err, "unlink", path);
                pool_unlock(p);
                break;
            }
            src = ZS_POOL_REFILLED_STALE;
        } else if (src == ZS_POOL_HIT) {
            src = ZS_POOL_FILLED;
        }
        rc = pool_fill(p, ck, path, now, out, err); /* unlocks the pool */
        if (rc != ZS_EBUSY) break;
        rc = ZS_OK; /* lost a race with another filler: attach to its segment */
    }
    if (rc == ZS_OK && *out == NULL) rc = zs_err_set(err, ZS_EBUSY, "pool: %s keeps changing; gave up", now->model_dir);
    if (rc == ZS_OK && how) *how = src;
    free(now);
    return rc;
}

const void *zs_pool_model_data(const zs_pool_model_t *m) { return (const char *)m->map + m->hdr->header_bytes; }
uint64_t zs_pool_model_bytes(const zs_pool_model_t *m) { return m->hdr->data_bytes; }
uint64_t zs_pool_model_hash(const zs_pool_model_t *m) { return m->hdr->content_hash; }

int zs_pool_model_pin(zs_pool_model_t *m, zs_err_t *err) {
    if (m->pinned) return ZS_OK;
    int rc = zs_gpu_host_register(m->map, m->map_bytes, err);
    if (rc == ZS_OK) m->pinned = 1;
    return rc;
}

void zs_pool_model_load_opts(const zs_pool_model_t *m, zs_load_opts_t *o) {
    o->source = zs_pool_model_data(m);
    o->source_pinned = m->pinned;
}

int zs_pool_model_verify(const zs_pool_model_t *m, zs_err_t *err) {
    uint64_t h = zs_seg_hash(zs_pool_model_data(m), m->hdr->data_bytes, m->threads);
    if (h != m->hdr->content_hash)
        return zs_err_set(err, ZS_EIO, "pool: segment of %s is damaged (content hash %016llx, recorded %016llx)",
                          m->hdr->model_dir, (unsigned long long)h, (unsigned long long)m->hdr->content_hash);
    return ZS_OK;
}

void zs_pool_release(zs_pool_model_t *m) { pool_model_free(m); }

int zs_pool_evict(zs_pool_t *p, const char *model_dir, zs_err_t *err) {
    char real[1024], name[64], path[PATH_MAX + 64];
    int rc = zs_seg_name(model_dir, real, sizeof real, name, sizeof name, err);
    if (rc != ZS_OK) return rc;
    snprintf(path, sizeof path, "%s/%s", p->dir, name);
    pool_lock(p);
    int r = pool_remove_if_unused(path);
    pool_unlock(p);
    if (r == 0) return zs_err_set(err, ZS_EBUSY, "pool: %s is in use by a running process", real);
    if (r < 0) return pool_errno(err, "remove", path);
    return ZS_OK;
}
