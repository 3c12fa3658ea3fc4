/* The kvstore disk tier: one directory, one block file per key in 256 shard directories
 * (<dir>/<first 2 hex>/<64 hex>.kvb), atomic writes (temp file, fsync, rename, fsync of the
 * shard), the index rebuilt at open by scanning headers (damaged, truncated, foreign and temp
 * files removed), byte capacity with LFU + recency eviction, checksum/namespace/layout checks on
 * every get (a file that fails is deleted). An exclusive flock on <dir>/.lock keeps a second
 * process from cleaning up under a live writer. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kvstore/kv_internal.h"

#define KVD_SUFFIX ".kvb"
#define KVD_TMP_PREFIX ".tmp-"

struct zs_kv_disk {
    pthread_mutex_t mu;
    kv_index_t ix;
    char dir[PATH_MAX];
    char layout[ZS_KV_LAYOUT_MAX];
    uint64_t capacity;
    int no_fsync;
    int lock_fd;
    uint64_t tmp_seq;
    zs_kv_tier_stats_t st;
};

int zs_kv_disk_path(const zs_kv_disk_t *d, const zs_kv_key_t *key, char *out, size_t cap) {
    char hex[65];
    zs_kv_key_hex(key, hex);
    int k = snprintf(out, cap, "%s/%.2s/%s" KVD_SUFFIX, d->dir, hex, hex);
    return k < 0 || (size_t)k >= cap ? ZS_ERANGE : ZS_OK;
}

static int is_hex(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) return 0;
    return 1;
}

static int fsync_path(const char *path) {
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return -1;
    int r = fsync(fd);
    int e = errno;
    close(fd);
    errno = e;
    return r;
}

static int read_full(int fd, void *buf, size_t n, uint64_t off) {
    size_t got = 0;
    while (got < n) {
        ssize_t r = pread(fd, (char *)buf + got, n - got, (off_t)(off + got));
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return r < 0 ? -1 : 0;
        got += (size_t)r;
    }
    return 1;
}

static int write_full(int fd, const void *buf, size_t n) {
    size_t done = 0;
    while (done < n) {
        ssize_t w = write(fd, (const char *)buf + done, n - done);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return -1;
        done += (size_t)w;
    }
    return 0;
}

/* Validates one block file at open: header, key = name, size, layout. 1 = keep (m filled). */
static int disk_scan_file(zs_kv_disk_t *d, const char *path, const char *hex, kvf_meta_t *m, int64_t *mtime_ns) {
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) return 0;
    struct stat st;
    uint8_t hdr[KVF_HDR_BYTES];
    int ok = fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_size >= (off_t)KVF_HDR_BYTES &&
             read_full(fd, hdr, KVF_HDR_BYTES, 0) == 1 && kvf_parse(hdr, KVF_HDR_BYTES, path, m, NULL) == ZS_OK;
    close(fd);
    if (!ok) return 0;
    char khex[65];
    zs_kv_key_hex(&m->key, khex);
    if (strcmp(khex, hex) != 0 || strcmp(m->layout, d->layout) != 0 ||
        (uint64_t)st.st_size != KVF_HDR_BYTES + m->payload_bytes)
        return 0;
    *mtime_ns = (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec;
    return 1;
}

static int disk_add(zs_kv_disk_t *d, const kvf_meta_t *m, uint64_t tick) {
    kv_ent_t *e = calloc(1, sizeof *e);
    if (e == NULL) return ZS_ENOMEM;
    e->key = m->key;
    e->ns = m->ns;
    e->block_index = m->block_index;
    e->bytes = KVF_HDR_BYTES + m->payload_bytes;
    e->len = (size_t)m->payload_bytes;
    e->freq = 1;
    e->tick = tick;
    if (kv_index_insert(&d->ix, e) != ZS_OK) {
        free(e);
        return ZS_ENOMEM;
    }
    return ZS_OK;
}

static void disk_unlink_ent(zs_kv_disk_t *d, kv_ent_t *e) {
    char path[PATH_MAX + 128];
    if (zs_kv_disk_path(d, &e->key, path, sizeof path) == ZS_OK) unlink(path);
    kv_index_remove(&d->ix, e);
    free(e);
}

static void disk_evict_to(zs_kv_disk_t *d, uint64_t limit, const kv_ent_t *keep) {
    while (d->capacity > 0 && d->ix.bytes > limit) {
        kv_ent_t *v = kv_index_victim(&d->ix, keep);
        if (v == NULL) break;
        disk_unlink_ent(d, v);
        d->st.evictions++;
    }
}

static int disk_scan(zs_kv_disk_t *d, zs_err_t *err) {
    DIR *top = opendir(d->dir);
    if (top == NULL) return zs_err_set(err, zs_status_from_errno(errno), "kv disk tier: opendir %s: %s", d->dir,
                                       strerror(errno));
    int rc = ZS_OK;
    struct dirent *de;
    while (rc == ZS_OK && (de = readdir(top)) != NULL) {
        if (strlen(de->d_name) != 2 || !is_hex(de->d_name, 2)) continue;
        char sdir[PATH_MAX + 8];
        snprintf(sdir, sizeof sdir, "%s/%.2s", d->dir, de->d_name);
        DIR *sh = opendir(sdir);
        if (sh == NULL) continue; /* not a directory: not ours */
        struct dirent *fe;
        while (rc == ZS_OK && (fe = readdir(sh)) != NULL) {
            const char *nm = fe->d_name;
            if (strcmp(nm, ".") == 0 || strcmp(nm, "..") == 0) continue;
            char path[PATH_MAX + 300];
            snprintf(path, sizeof path, "%s/%s", sdir, nm);
            if (strncmp(nm, KVD_TMP_PREFIX, strlen(KVD_TMP_PREFIX)) == 0) {
                if (unlink(path) == 0) d->st.temp_removed++;
                continue;
            }
            struct stat lst;
            if (lstat(path, &lst) != 0 || S_ISDIR(lst.st_mode)) continue; /* leave subdirectories alone */
            kvf_meta_t m;
            int64_t mt = 0;
            int named = strlen(nm) == 64 + strlen(KVD_SUFFIX) && is_hex(nm, 64) &&
                        strcmp(nm + 64, KVD_SUFFIX) == 0 && memcmp(nm, de->d_name, 2) == 0;
            char hex[65];
            memcpy(hex, nm, 64);
            hex[64] = '\0';
            if (!named || !S_ISREG(lst.st_mode) || !disk_scan_file(d, path, hex, &m, &mt)) {
                if (unlink(path) == 0) d->st.rejected++;
                continue;
            }
            /* Files are ordered by mtime for recency until they are used again. */
            uint64_t tick = mt > 0 ? (uint64_t)mt : 0;
            if (tick > d->ix.tick) d->ix.tick = tick;
            if (disk_add(d, &m, tick) != ZS_OK)
                rc = zs_err_set(err, ZS_ENOMEM, "kv disk tier: out of memory indexing %s", path);
        }
        closedir(sh);
    }
    closedir(top);
    return rc;
}

int zs_kv_disk_open(const zs_kv_disk_opts_t *opts, zs_kv_disk_t **out, zs_err_t *err) {
    *out = NULL;
    if (opts == NULL || opts->dir == NULL || opts->dir[0] == '\0' || opts->layout == NULL)
        return zs_err_set(err, ZS_EINVAL, "kv disk tier: directory and layout are required");
    size_t ll = strlen(opts->layout);
    if (ll == 0 || ll >= ZS_KV_LAYOUT_MAX)
        return zs_err_set(err, ZS_EINVAL, "kv disk tier %s: layout descriptor of %zu bytes (1..%d)", opts->dir, ll,
                          ZS_KV_LAYOUT_MAX - 1);
    if (strlen(opts->dir) >= PATH_MAX - 128)
        return zs_err_set(err, ZS_ERANGE, "kv disk tier: directory path too long");
    zs_kv_disk_t *d = calloc(1, sizeof *d);
    if (d == NULL) return zs_err_set(err, ZS_ENOMEM, "kv disk tier %s: out of memory", opts->dir);
    d->lock_fd = -1;
    snprintf(d->dir, sizeof d->dir, "%s", opts->dir);
    memcpy(d->layout, opts->layout, ll + 1);
    d->capacity = opts->capacity;
    d->no_fsync = opts->no_fsync;
    int rc = ZS_OK;
    if (kv_index_init(&d->ix) != ZS_OK) {
        free(d);
        return zs_err_set(err, ZS_ENOMEM, "kv disk tier %s: out of memory", opts->dir);
    }
    if (pthread_mutex_init(&d->mu, NULL) != 0) {
        kv_index_destroy(&d->ix, NULL);
        free(d);
        return zs_err_set(err, ZS_EIO, "kv disk tier %s: pthread_mutex_init failed", opts->dir);
    }
    if (mkdir(d->dir, 0755) != 0 && errno != EEXIST)
        rc = zs_err_set(err, zs_status_from_errno(errno), "kv disk tier: mkdir %s: %s", d->dir, strerror(errno));
    char lp[PATH_MAX + 16];
    snprintf(lp, sizeof lp, "%s/.lock", d->dir);
    if (rc == ZS_OK && (d->lock_fd = open(lp, O_RDWR | O_CREAT | O_CLOEXEC, 0644)) < 0)
        rc = zs_err_set(err, zs_status_from_errno(errno), "kv disk tier: open %s: %s", lp, strerror(errno));
    if (rc == ZS_OK && flock(d->lock_fd, LOCK_EX | LOCK_NB) != 0)
        rc = errno == EWOULDBLOCK
                 ? zs_err_set(err, ZS_EBUSY, "kv disk tier %s: in use by another process", d->dir)
                 : zs_err_set(err, zs_status_from_errno(errno), "kv disk tier: flock %s: %s", lp, strerror(errno));
    if (rc == ZS_OK) rc = disk_scan(d, err);
    if (rc != ZS_OK) {
        zs_kv_disk_close(d);
        return rc;
    }
    disk_evict_to(d, d->capacity, NULL);
    *out = d;
    return ZS_OK;
}

void zs_kv_disk_close(zs_kv_disk_t *d) {
    if (d == NULL) return;
    kv_index_destroy(&d->ix, NULL);
    if (d->lock_fd >= 0) close(d->lock_fd); /* releases the flock */
    pthread_mutex_destroy(&d->mu);
    free(d);
}

int zs_kv_disk_put(zs_kv_disk_t *d, const zs_kv_ns_t *ns, const zs_kv_key_t *key, uint64_t block_index,
                   const void *data, size_t len, zs_err_t *err) {
    char hex[65], path[PATH_MAX + 128], tmp[PATH_MAX + 200], sdir[PATH_MAX + 8];
    zs_kv_key_hex(key, hex);
    if (data == NULL || len == 0) return zs_err_set(err, ZS_EINVAL, "kv disk put %.16s: empty block", hex);
    uint64_t fbytes = KVF_HDR_BYTES + (uint64_t)len;
    if (d->capacity > 0 && fbytes > d->capacity)
        return zs_err_set(err, ZS_ERANGE, "kv disk put %.16s: block file of %llu bytes exceeds the capacity %llu",
                          hex, (unsigned long long)fbytes, (unsigned long long)d->capacity);
    kvf_meta_t m;
    memset(&m, 0, sizeof m);
    m.ns = *ns;
    m.key = *key;
    m.block_index = block_index;
    m.payload_bytes = len;
    memcpy(m.layout, d->layout, sizeof m.layout);
    uint8_t hdr[KVF_HDR_BYTES];
    int rc = kvf_encode(&m, data, hdr, err);
    if (rc != ZS_OK) return rc;
    pthread_mutex_lock(&d->mu);
    uint64_t seq = ++d->tmp_seq;
    pthread_mutex_unlock(&d->mu);
    snprintf(sdir, sizeof sdir, "%s/%.2s", d->dir, hex);
    zs_kv_disk_path(d, key, path, sizeof path);
    snprintf(tmp, sizeof tmp, "%s/" KVD_TMP_PREFIX "%s-%ld-%llu", sdir, hex, (long)getpid(), (unsigned long long)seq);
    if (mkdir(sdir, 0755) != 0 && errno != EEXIST)
        return zs_err_set(err, zs_status_from_errno(errno), "kv disk put: mkdir %s: %s", sdir, strerror(errno));
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0) return zs_err_set(err, zs_status_from_errno(errno), "kv disk put: create %s: %s", tmp, strerror(errno));
    const char *step = NULL;
    if (write_full(fd, hdr, sizeof hdr) != 0 || write_full(fd, data, len) != 0) step = "write";
    else if (!d->no_fsync && fsync(fd) != 0) step = "fsync";
    int e = errno;
    if (close(fd) != 0 && step == NULL) {
        step = "close";
        e = errno;
    }
    if (step == NULL && rename(tmp, path) != 0) {
        step = "rename";
        e = errno;
    }
    if (step != NULL) {
        unlink(tmp);
        return zs_err_set(err, zs_status_from_errno(e), "kv disk put: %s %s: %s", step, tmp, strerror(e));
    }
    if (!d->no_fsync && fsync_path(sdir) != 0)
        return zs_err_set(err, zs_status_from_errno(errno), "kv disk put: fsync %s: %s", sdir, strerror(errno));
    pthread_mutex_lock(&d->mu);
    kv_ent_t *cur = kv_index_find(&d->ix, key);
    if (cur != NULL) { /* replaced the file: same key, re-account */
        kv_index_remove(&d->ix, cur);
        free(cur);
    }
    rc = disk_add(d, &m, 0);
    if (rc == ZS_OK) {
        kv_ent_t *ne = kv_index_find(&d->ix, key);
        ne->tick = ++d->ix.tick; /* newest, used once */
        d->st.puts++;
        disk_evict_to(d, d->capacity, ne);
    } else {
        unlink(path);
        rc = zs_err_set(err, rc, "kv disk put %.16s: out of memory for the index", hex);
    }
    pthread_mutex_unlock(&d->mu);
    return rc;
}

/* Deletes the file of a block that failed verification, if it is still the file read. */
static void disk_reject(zs_kv_disk_t *d, const zs_kv_key_t *key, const char *path, const struct stat *seen) {
    pthread_mutex_lock(&d->mu);
    struct stat st;
    if (stat(path, &st) == 0 && st.st_ino == seen->st_ino && st.st_dev == seen->st_dev) {
        unlink(path);
        kv_ent_t *e = kv_index_find(&d->ix, key);
        if (e != NULL) {
            kv_index_remove(&d->ix, e);
            free(e);
        }
        d->st.rejected++;
    }
    pthread_mutex_unlock(&d->mu);
}

int zs_kv_disk_get(zs_kv_disk_t *d, const zs_kv_ns_t *ns, const zs_kv_key_t *key, void *buf, size_t cap,
                   size_t *len, zs_err_t *err) {
    char hex[65], path[PATH_MAX + 128];
    zs_kv_key_hex(key, hex);
    zs_kv_disk_path(d, key, path, sizeof path);
    pthread_mutex_lock(&d->mu);
    kv_ent_t *e = kv_index_find(&d->ix, key);
    int fd = -1, oe = 0;
    /* A key indexed under another namespace is a miss for this one (keys derive from the
     * namespace, so an honest caller never asks for it); the file is left to its owner. */
    if (e != NULL && memcmp(e->ns.b, ns->b, ZS_KV_HASH_BYTES) == 0) {
        fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        oe = errno;
        if (fd < 0) { /* removed behind our back */
            kv_index_remove(&d->ix, e);
            free(e);
        }
    }
    if (fd < 0) {
        d->st.misses++;
        pthread_mutex_unlock(&d->mu);
        if (e != NULL && fd < 0 && oe != ENOENT && oe != 0)
            return zs_err_set(err, zs_status_from_errno(oe), "kv disk get: open %s: %s", path, strerror(oe));
        return zs_err_set(err, ZS_ENOENT, "kv disk get %.16s: not present", hex);
    }
    pthread_mutex_unlock(&d->mu);
    struct stat st;
    uint8_t hdr[KVF_HDR_BYTES];
    kvf_meta_t m;
    int rc = ZS_OK;
    if (fstat(fd, &st) != 0) {
        rc = zs_err_set(err, zs_status_from_errno(errno), "kv disk get: fstat %s: %s", path, strerror(errno));
        close(fd);
        return rc;
    }
    int r = read_full(fd, hdr, KVF_HDR_BYTES, 0);
    if (r < 0) rc = zs_err_set(err, ZS_EIO, "kv disk get: read %s: %s", path, strerror(errno));
    else if (r == 0) rc = zs_err_set(err, ZS_EFORMAT, "%s: truncated header", path);
    if (rc == ZS_OK) rc = kvf_parse(hdr, KVF_HDR_BYTES, path, &m, err);
    if (rc == ZS_OK && memcmp(m.key.b, key->b, ZS_KV_HASH_BYTES) != 0)
        rc = zs_err_set(err, ZS_EFORMAT, "%s: header key differs from the file name", path);
    if (rc == ZS_OK && memcmp(m.ns.b, ns->b, ZS_KV_HASH_BYTES) != 0)
        rc = zs_err_set(err, ZS_EFORMAT, "%s: header namespace differs from the requested one", path);
    if (rc == ZS_OK && strcmp(m.layout, d->layout) != 0)
        rc = zs_err_set(err, ZS_EFORMAT, "%s: layout '%s' differs from '%s'", path, m.layout, d->layout);
    if (rc == ZS_OK && (uint64_t)st.st_size != KVF_HDR_BYTES + m.payload_bytes)
        rc = zs_err_set(err, ZS_EFORMAT, "%s: %lld bytes, header says %llu", path, (long long)st.st_size,
                        (unsigned long long)(KVF_HDR_BYTES + m.payload_bytes));
    if (rc == ZS_OK && cap < m.payload_bytes) {
        if (len) *len = (size_t)m.payload_bytes;
        close(fd);
        return zs_err_set(err, ZS_ERANGE, "kv disk get %.16s: buffer of %zu bytes, block has %llu", hex, cap,
                          (unsigned long long)m.payload_bytes);
    }
    if (rc == ZS_OK) { /* read and checksum a chunk at a time (kvf_check_t) */
        kvf_check_t chk;
        kvf_check_begin(&chk);
        for (size_t off = 0; rc == ZS_OK && off < m.payload_bytes; off += KVF_READ_CHUNK) {
            size_t n = m.payload_bytes - off < KVF_READ_CHUNK ? (size_t)(m.payload_bytes - off) : KVF_READ_CHUNK;
            r = read_full(fd, (char *)buf + off, n, KVF_HDR_BYTES + off);
            if (r < 0) rc = zs_err_set(err, ZS_EIO, "kv disk get: read %s: %s", path, strerror(errno));
            else if (r == 0) rc = zs_err_set(err, ZS_EFORMAT, "%s: truncated payload", path);
            else kvf_check_update(&chk, (const char *)buf + off, n);
        }
        if (rc == ZS_OK) rc = kvf_check_end(&chk, &m, path, err);
    }
    close(fd);
    if (rc == ZS_EFORMAT) {
        disk_reject(d, key, path, &st);
        return rc;
    }
    if (rc != ZS_OK) return rc;
    pthread_mutex_lock(&d->mu);
    e = kv_index_find(&d->ix, key);
    if (e != NULL) kv_index_touch(&d->ix, e);
    d->st.hits++;
    d->st.restored_bytes += m.payload_bytes;
    pthread_mutex_unlock(&d->mu);
    if (len) *len = (size_t)m.payload_bytes;
    return ZS_OK;
}

int zs_kv_disk_contains(zs_kv_disk_t *d, const zs_kv_ns_t *ns, const zs_kv_key_t *key) {
    pthread_mutex_lock(&d->mu);
    kv_ent_t *e = kv_index_find(&d->ix, key);
    int r = e != NULL && memcmp(e->ns.b, ns->b, ZS_KV_HASH_BYTES) == 0;
    pthread_mutex_unlock(&d->mu);
    return r;
}

int zs_kv_disk_cached(zs_kv_disk_t *d, const zs_kv_ns_t *ns, const zs_kv_key_t *key) {
    if (!zs_kv_disk_contains(d, ns, key)) return -1;
    char path[PATH_MAX + 128];
    if (zs_kv_disk_path(d, key, path, sizeof path) != ZS_OK) return -1;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) return -1;
    struct stat st;
    int r = -1;
    if (fstat(fd, &st) == 0 && st.st_size > 0) {
        size_t len = (size_t)st.st_size, page = (size_t)sysconf(_SC_PAGESIZE), npages = (len + page - 1) / page;
        /* a mapping touches no page; mincore says which are resident */
        void *m = mmap(NULL, len, PROT_READ, MAP_SHARED, fd, 0);
        unsigned char *vec = m != MAP_FAILED ? malloc(npages) : NULL;
        if (vec != NULL && mincore(m, len, vec) == 0) {
            r = 1;
            for (size_t i = 0; i < npages && r == 1; i++)
                if (!(vec[i] & 1)) r = 0;
        }
        free(vec);
        if (m != MAP_FAILED) munmap(m, len);
    }
    close(fd);
    return r;
}

int zs_kv_disk_evict(zs_kv_disk_t *d, const zs_kv_key_t *key, zs_err_t *err) {
    pthread_mutex_lock(&d->mu);
    kv_ent_t *e = kv_index_find(&d->ix, key);
    if (e != NULL) {
        disk_unlink_ent(d, e);
        d->st.evictions++;
    }
    pthread_mutex_unlock(&d->mu);
    if (e == NULL) {
        char hex[65];
        zs_kv_key_hex(key, hex);
        return zs_err_set(err, ZS_ENOENT, "kv disk evict %.16s: not present", hex);
    }
    return ZS_OK;
}

void zs_kv_disk_stats(zs_kv_disk_t *d, zs_kv_tier_stats_t *out) {
    pthread_mutex_lock(&d->mu);
    *out = d->st;
    out->blocks = d->ix.count;
    out->bytes = d->ix.bytes;
    out->capacity = d->capacity;
    pthread_mutex_unlock(&d->mu);
}
