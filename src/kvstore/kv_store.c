/* The kvstore store: host + disk tiers, longest-prefix lookup, fetch (synchronous, or as a
 * job on reader threads that bring disk blocks into pinned host slots in parallel, its usable
 * prefix visible while it grows), put and
 * reserve/commit with asynchronous write-back to disk from one writer thread through a
 * bounded queue. Queued write-backs borrow the host copy (pinned) instead of copying it. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/clock.h"
#include "kvstore/kv_internal.h"

typedef struct kvs_item {
    zs_kv_ns_t ns;
    zs_kv_key_t key;
    uint64_t block_index;
    const void *data;
    size_t len;
    int owned;                    /* 1: data is our copy (free it); 0: a host pin (unpin it) */
} kvs_item_t;

enum { JOB_TODO = 0, JOB_HOST = 1, JOB_DISK = 2, JOB_FAIL = -1 };

struct zs_kvstore_job {
    zs_kvstore_t *s;
    zs_kv_ns_t ns;
    zs_kv_key_t *keys;
    const void **data;
    int8_t *state;
    size_t n;                     /* keys considered (present in some tier at begin) */
    size_t next;                  /* next index a reader takes (under s->mu) */
    size_t outstanding;           /* disk reads not finished (under s->mu) */
    size_t ready;                 /* leading blocks done and usable (under s->mu) */
    size_t notified;              /* ready when the callback was last called (under s->mu) */
    int queued, cancel;
    double t0, t_done;
    zs_kvstore_job_cb done;
    void *ctx;
    atomic_int finished;
    struct zs_kvstore_job *qnext; /* reader queue */
};

struct zs_kvstore {
    zs_kv_host_t *host;
    zs_kv_disk_t *disk;           /* NULL: no disk tier */
    size_t block_bytes;
    pthread_mutex_t mu;
    pthread_cond_t cv_work, cv_idle, cv_read, cv_job;
    pthread_t writer;
    pthread_t *readers;
    int nreaders;
    int read_delay_ms;            /* testing aid (zs_kvstore_opts_t) */
    int writer_started, stopping, writing;
    kvs_item_t *q;
    uint32_t qcap, qhead, qlen;
    zs_kvstore_job_t *jq_head, *jq_tail; /* jobs with disk blocks left to start */
    uint64_t queued, done, dropped, write_errors, promotions;
    zs_err_t write_err;           /* first write error since the last flush */
};

/* --- write-back ------------------------------------------------------------------------------ */

static void item_release(zs_kvstore_t *s, const kvs_item_t *it) {
    if (it->owned) free((void *)it->data);
    else zs_kv_host_unpin(s->host, &it->key);
}

static void *kvs_writer_main(void *arg) {
    zs_kvstore_t *s = arg;
    pthread_mutex_lock(&s->mu);
    for (;;) {
        while (s->qlen == 0 && !s->stopping) pthread_cond_wait(&s->cv_work, &s->mu);
        if (s->qlen == 0) break; /* stopping and drained */
        kvs_item_t it = s->q[s->qhead];
        s->qhead = (s->qhead + 1) % s->qcap;
        s->qlen--;
        s->writing = 1;
        pthread_mutex_unlock(&s->mu);
        zs_err_t e = {0};
        int rc = zs_kv_disk_contains(s->disk, &it.ns, &it.key)
                     ? ZS_OK
                     : zs_kv_disk_put(s->disk, &it.ns, &it.key, it.block_index, it.data, it.len, &e);
        item_release(s, &it);
        pthread_mutex_lock(&s->mu);
        s->writing = 0;
        s->done++;
        if (rc != ZS_OK) {
            s->write_errors++;
            if (s->write_err.code == 0) s->write_err = e;
        }
        if (s->qlen == 0) pthread_cond_broadcast(&s->cv_idle);
    }
    pthread_cond_broadcast(&s->cv_idle);
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

/* Queues a disk write of a block whose bytes stay valid until item_release; on refusal (no
 * disk tier, full queue, stopping) releases them and counts a drop. */
static void enqueue_write(zs_kvstore_t *s, const zs_kv_ns_t *ns, const zs_kv_key_t *key, uint64_t block_index,
                          const void *data, size_t len, int owned) {
    kvs_item_t it = {.ns = *ns, .key = *key, .block_index = block_index, .data = data, .len = len, .owned = owned};
    pthread_mutex_lock(&s->mu);
    if (s->qlen == s->qcap || s->stopping) {
        s->dropped++;
        pthread_mutex_unlock(&s->mu);
        item_release(s, &it);
        return;
    }
    s->q[(s->qhead + s->qlen) % s->qcap] = it;
    s->qlen++;
    s->queued++;
    pthread_cond_signal(&s->cv_work);
    pthread_mutex_unlock(&s->mu);
}

/* --- fetch jobs: disk -> pinned host slots on the reader threads ----------------------------- */

/* Reads block i of job j from disk into a reserved host slot; returns its state. */
static int job_read_one(zs_kvstore_t *s, zs_kvstore_job_t *j, size_t i) {
    const zs_kv_key_t *k = &j->keys[i];
    void *slot = NULL;
    int rc = zs_kv_host_reserve(s->host, &j->ns, k, 0, &slot, NULL);
    if (rc == 1) { /* arrived meanwhile (another job, a put) */
        size_t len = 0;
        if (zs_kv_host_pin(s->host, &j->ns, k, &j->data[i], &len, NULL) == ZS_OK) return JOB_HOST;
        return JOB_FAIL; /* being filled by someone else: not usable now */
    }
    if (rc != ZS_OK) return JOB_FAIL;
    if (s->read_delay_ms > 0) {
        struct timespec d = {s->read_delay_ms / 1000, (long)(s->read_delay_ms % 1000) * 1000000L};
        while (nanosleep(&d, &d) != 0 && errno == EINTR) {
        }
    }
    size_t got = 0;
    rc = zs_kv_disk_get(s->disk, &j->ns, k, slot, s->block_bytes, &got, NULL);
    if (rc != ZS_OK || got != s->block_bytes) {
        zs_kv_host_abort(s->host, k);
        return JOB_FAIL;
    }
    zs_kv_host_commit(s->host, k, 1);
    j->data[i] = slot;
    return JOB_DISK;
}

static void *kvs_reader_main(void *arg) {
    zs_kvstore_t *s = arg;
    pthread_mutex_lock(&s->mu);
    for (;;) {
        while (s->jq_head == NULL && !s->stopping) pthread_cond_wait(&s->cv_read, &s->mu);
        if (s->jq_head == NULL) break;
        zs_kvstore_job_t *j = s->jq_head;
        size_t i = j->next;
        while (i < j->n && j->state[i] != JOB_TODO) i++;
        j->next = i + 1;
        if (j->next >= j->n) { /* nothing left to start in this job */
            s->jq_head = j->qnext;
            if (s->jq_head == NULL) s->jq_tail = NULL;
            j->queued = 0;
        }
        if (i >= j->n) continue;
        int cancel = j->cancel;
        pthread_mutex_unlock(&s->mu);
        int st = cancel ? JOB_FAIL : job_read_one(s, j, i); /* j stays: outstanding > 0 */
        pthread_mutex_lock(&s->mu);
        j->state[i] = (int8_t)st;
        if (st == JOB_DISK) s->promotions++;
        while (j->ready < j->n && j->state[j->ready] > 0) j->ready++;
        if (j->outstanding > 1 && !j->cancel && j->done &&
            j->ready >= j->notified + ZS_KVSTORE_PROGRESS_BLOCKS) {
            /* still counted in outstanding: j (and the owner of ctx) cannot go meanwhile */
            j->notified = j->ready;
            zs_kvstore_job_cb cb = j->done;
            pthread_mutex_unlock(&s->mu);
            cb(j->ctx, 0);
            pthread_mutex_lock(&s->mu);
        }
        if (--j->outstanding == 0) {
            /* j may be freed as soon as finished is set: take what the callback needs first */
            zs_kvstore_job_cb cb = j->cancel ? NULL : j->done;
            void *ctx = j->ctx;
            j->t_done = zs_now();
            atomic_store(&j->finished, 1);
            pthread_cond_broadcast(&s->cv_job);
            pthread_mutex_unlock(&s->mu);
            if (cb) cb(ctx, 1);
            pthread_mutex_lock(&s->mu);
        }
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

int zs_kvstore_fetch_begin(zs_kvstore_t *s, const zs_kv_ns_t *ns, const zs_kv_key_t *keys, size_t n,
                           zs_kvstore_job_cb done, void *ctx, zs_kvstore_job_t **out, zs_err_t *err) {
    *out = NULL;
    zs_kvstore_job_t *j = calloc(1, sizeof *j);
    if (j == NULL || (n > 0 && ((j->keys = malloc(n * sizeof *keys)) == NULL ||
                                (j->data = calloc(n, sizeof *j->data)) == NULL ||
                                (j->state = calloc(n, 1)) == NULL))) {
        if (j) {
            free(j->keys);
            free(j->data);
        }
        free(j);
        return zs_err_set(err, ZS_ENOMEM, "kv store: out of memory for a fetch of %zu blocks", n);
    }
    j->s = s;
    j->ns = *ns;
    j->done = done;
    j->ctx = ctx;
    j->t0 = zs_now();
    atomic_init(&j->finished, 0);
    if (n > 0) memcpy(j->keys, keys, n * sizeof *keys);
    /* The usable prefix: blocks in the host tier are pinned now, disk blocks read later. */
    size_t i = 0, todo = 0;
    for (; i < n; i++) {
        size_t len = 0;
        if (zs_kv_host_pin(s->host, ns, &keys[i], &j->data[i], &len, NULL) == ZS_OK) {
            j->state[i] = JOB_HOST;
        } else if (s->disk != NULL && zs_kv_disk_contains(s->disk, ns, &keys[i])) {
            j->state[i] = JOB_TODO;
            todo++;
        } else {
            break;
        }
    }
    j->n = i;
    while (j->ready < j->n && j->state[j->ready] == JOB_HOST) j->ready++;
    if (todo == 0) {
        j->t_done = zs_now();
        atomic_store(&j->finished, 1);
        *out = j;
        return ZS_OK;
    }
    pthread_mutex_lock(&s->mu);
    j->outstanding = todo;
    j->queued = 1;
    if (s->jq_tail) s->jq_tail->qnext = j;
    else s->jq_head = j;
    s->jq_tail = j;
    pthread_cond_broadcast(&s->cv_read);
    pthread_mutex_unlock(&s->mu);
    *out = j;
    return ZS_OK;
}

int zs_kvstore_job_finished(const zs_kvstore_job_t *j) { return atomic_load(&j->finished); }

void zs_kvstore_job_wait(zs_kvstore_job_t *j) {
    zs_kvstore_t *s = j->s;
    pthread_mutex_lock(&s->mu);
    while (!atomic_load(&j->finished)) pthread_cond_wait(&s->cv_job, &s->mu);
    pthread_mutex_unlock(&s->mu);
}

size_t zs_kvstore_job_ready(zs_kvstore_job_t *j) {
    pthread_mutex_lock(&j->s->mu);
    size_t r = j->ready;
    pthread_mutex_unlock(&j->s->mu);
    return r;
}

size_t zs_kvstore_job_result(const zs_kvstore_job_t *j, const void *const **data, zs_kvstore_job_stats_t *st) {
    size_t ok = 0;
    if (atomic_load(&j->finished))
        while (ok < j->n && j->state[ok] > 0) ok++;
    if (data) *data = j->data;
    if (st) {
        memset(st, 0, sizeof *st);
        for (size_t i = 0; i < ok; i++) {
            if (j->state[i] == JOB_HOST) st->host_blocks++;
            else st->disk_blocks++;
        }
        st->seconds = atomic_load(&j->finished) ? j->t_done - j->t0 : 0;
    }
    return ok;
}

zs_kv_tier_t zs_kvstore_job_tier(const zs_kvstore_job_t *j, size_t i) {
    if (i >= j->n) return ZS_KV_TIER_NONE; /* i below a ready count: its state is final */
    return j->state[i] == JOB_HOST ? ZS_KV_TIER_HOST : j->state[i] == JOB_DISK ? ZS_KV_TIER_DISK : ZS_KV_TIER_NONE;
}

void zs_kvstore_job_free(zs_kvstore_job_t *j) {
    if (j == NULL) return;
    zs_kvstore_t *s = j->s;
    pthread_mutex_lock(&s->mu);
    j->cancel = 1;
    if (j->queued) { /* unlink: readers start nothing more of it */
        zs_kvstore_job_t **pp = &s->jq_head, *prev = NULL;
        while (*pp && *pp != j) {
            prev = *pp;
            pp = &(*pp)->qnext;
        }
        if (*pp == j) {
            *pp = j->qnext;
            if (s->jq_tail == j) s->jq_tail = prev;
        }
        j->queued = 0;
        /* the blocks no reader took will never finish: account for them */
        for (size_t i = j->next; i < j->n; i++)
            if (j->state[i] == JOB_TODO) {
                j->state[i] = JOB_FAIL;
                j->outstanding--;
            }
        if (j->outstanding == 0 && !atomic_load(&j->finished)) {
            j->t_done = zs_now();
            atomic_store(&j->finished, 1);
        }
    }
    while (!atomic_load(&j->finished)) pthread_cond_wait(&s->cv_job, &s->mu);
    pthread_mutex_unlock(&s->mu);
    for (size_t i = 0; i < j->n; i++)
        if (j->state[i] > 0) zs_kv_host_unpin(s->host, &j->keys[i]);
    free(j->keys);
    free(j->data);
    free(j->state);
    free(j);
}

/* --- open / close ---------------------------------------------------------------------------- */

int zs_kvstore_open(const zs_kvstore_opts_t *opts, zs_kvstore_t **out, zs_err_t *err) {
    *out = NULL;
    zs_kvstore_t *s = calloc(1, sizeof *s);
    if (s == NULL) return zs_err_set(err, ZS_ENOMEM, "kv store: out of memory");
    s->block_bytes = opts->block_bytes;
    int rc = zs_kv_host_open(opts->host_capacity, opts->block_bytes, &s->host, err);
    if (rc != ZS_OK) {
        free(s);
        return rc;
    }
    int mu = pthread_mutex_init(&s->mu, NULL), c1 = pthread_cond_init(&s->cv_work, NULL),
        c2 = pthread_cond_init(&s->cv_idle, NULL), c3 = pthread_cond_init(&s->cv_read, NULL),
        c4 = pthread_cond_init(&s->cv_job, NULL);
    if (mu != 0 || c1 != 0 || c2 != 0 || c3 != 0 || c4 != 0) {
        if (mu == 0) pthread_mutex_destroy(&s->mu);
        if (c1 == 0) pthread_cond_destroy(&s->cv_work);
        if (c2 == 0) pthread_cond_destroy(&s->cv_idle);
        if (c3 == 0) pthread_cond_destroy(&s->cv_read);
        if (c4 == 0) pthread_cond_destroy(&s->cv_job);
        zs_kv_host_close(s->host);
        free(s);
        return zs_err_set(err, ZS_EIO, "kv store: pthread mutex/cond init failed");
    }
    if (opts->disk.dir != NULL) {
        s->qcap = opts->queue_depth ? opts->queue_depth : 4096;
        s->q = calloc(s->qcap, sizeof *s->q);
        if (s->q == NULL) rc = zs_err_set(err, ZS_ENOMEM, "kv store: out of memory for a queue of %u", s->qcap);
        if (rc == ZS_OK) rc = zs_kv_disk_open(&opts->disk, &s->disk, err);
        if (rc == ZS_OK) {
            int t = pthread_create(&s->writer, NULL, kvs_writer_main, s);
            if (t != 0) rc = zs_err_set(err, ZS_EIO, "kv store: cannot start the disk writer thread (%d)", t);
            else s->writer_started = 1;
        }
        int nr = opts->readers > 0 ? opts->readers : 4;
        s->read_delay_ms = opts->read_delay_ms > 0 ? opts->read_delay_ms : 0;
        if (rc == ZS_OK && (s->readers = calloc((size_t)nr, sizeof *s->readers)) == NULL)
            rc = zs_err_set(err, ZS_ENOMEM, "kv store: out of memory for %d readers", nr);
        for (int i = 0; rc == ZS_OK && i < nr; i++) {
            int t = pthread_create(&s->readers[i], NULL, kvs_reader_main, s);
            if (t != 0) rc = zs_err_set(err, ZS_EIO, "kv store: cannot start disk reader thread %d (%d)", i, t);
            else s->nreaders++;
        }
    }
    if (rc != ZS_OK) {
        zs_kvstore_close(s);
        return rc;
    }
    *out = s;
    return ZS_OK;
}

void zs_kvstore_close(zs_kvstore_t *s) {
    if (s == NULL) return;
    pthread_mutex_lock(&s->mu);
    s->stopping = 1;
    pthread_cond_broadcast(&s->cv_work);
    pthread_cond_broadcast(&s->cv_read);
    pthread_mutex_unlock(&s->mu);
    if (s->writer_started) pthread_join(s->writer, NULL);
    for (int i = 0; i < s->nreaders; i++) pthread_join(s->readers[i], NULL);
    free(s->readers);
    for (uint32_t i = 0; i < s->qlen; i++) item_release(s, &s->q[(s->qhead + i) % s->qcap]);
    free(s->q);
    zs_kv_disk_close(s->disk);
    zs_kv_host_close(s->host);
    pthread_cond_destroy(&s->cv_job);
    pthread_cond_destroy(&s->cv_read);
    pthread_cond_destroy(&s->cv_idle);
    pthread_cond_destroy(&s->cv_work);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

/* --- lookup, fetch, put ------------------------------------------------------------------------ */

size_t zs_kvstore_block_bytes(const zs_kvstore_t *s) { return s->block_bytes; }

void zs_kvstore_host_arena(zs_kvstore_t *s, void **base, size_t *bytes) { zs_kv_host_arena(s->host, base, bytes); }

int zs_kvstore_has_disk(const zs_kvstore_t *s) { return s->disk != NULL; }

zs_kv_tier_t zs_kvstore_tier_of(zs_kvstore_t *s, const zs_kv_ns_t *ns, const zs_kv_key_t *key) {
    if (zs_kv_host_contains(s->host, ns, key)) return ZS_KV_TIER_HOST;
    if (s->disk != NULL && zs_kv_disk_contains(s->disk, ns, key)) return ZS_KV_TIER_DISK;
    return ZS_KV_TIER_NONE;
}

size_t zs_kvstore_lookup(zs_kvstore_t *s, const zs_kv_ns_t *ns, const zs_kv_key_t *keys, size_t n,
                         zs_kv_tier_t *tiers) {
    size_t i = 0;
    for (; i < n; i++) {
        zs_kv_tier_t t = zs_kvstore_tier_of(s, ns, &keys[i]);
        if (t == ZS_KV_TIER_NONE) break;
        if (tiers) tiers[i] = t;
    }
    return i;
}

int zs_kvstore_disk_cached(zs_kvstore_t *s, const zs_kv_ns_t *ns, const zs_kv_key_t *key) {
    return s->disk != NULL ? zs_kv_disk_cached(s->disk, ns, key) : -1;
}

int zs_kvstore_fetch(zs_kvstore_t *s, const zs_kv_ns_t *ns, const zs_kv_key_t *key, void *buf, size_t cap,
                     size_t *len, zs_kv_tier_t *from, zs_err_t *err) {
    if (from) *from = ZS_KV_TIER_NONE;
    size_t got = 0;
    int rc = zs_kv_host_get(s->host, ns, key, buf, cap, &got, NULL);
    if (rc == ZS_OK) {
        if (len) *len = got;
        if (from) *from = ZS_KV_TIER_HOST;
        return ZS_OK;
    }
    if (rc != ZS_ENOENT || s->disk == NULL) {
        char hex[65];
        zs_kv_key_hex(key, hex);
        if (len) *len = got;
        return zs_err_set(err, rc, rc == ZS_ERANGE ? "kv store fetch %.16s: buffer of %zu bytes, block has more"
                                                   : "kv store fetch %.16s: not present (buffer %zu)",
                          hex, cap);
    }
    rc = zs_kv_disk_get(s->disk, ns, key, buf, cap, &got, err);
    if (rc != ZS_OK) return rc;
    if (len) *len = got;
    if (from) *from = ZS_KV_TIER_DISK;
    /* Promote; a block the host tier cannot take (pinned full) just stays on disk. */
    if (got == s->block_bytes && zs_kv_host_put(s->host, ns, key, 0 /* chain position not tracked */, buf, got,
                                                NULL) == ZS_OK) {
        pthread_mutex_lock(&s->mu);
        s->promotions++;
        pthread_mutex_unlock(&s->mu);
    }
    return ZS_OK;
}

/* Queues the write-back of a block the host tier may hold (borrowing it pinned) or, failing
 * that, of a copy of data. */
static void write_back(zs_kvstore_t *s, const zs_kv_ns_t *ns, const zs_kv_key_t *key, uint64_t block_index,
                       const void *data, size_t len) {
    if (s->disk == NULL || zs_kv_disk_contains(s->disk, ns, key)) return;
    const void *p = kv_host_borrow(s->host, ns, key);
    if (p != NULL) {
        enqueue_write(s, ns, key, block_index, p, s->block_bytes, 0);
        return;
    }
    void *copy = malloc(len);
    if (copy == NULL) {
        pthread_mutex_lock(&s->mu);
        s->dropped++;
        pthread_mutex_unlock(&s->mu);
        return;
    }
    memcpy(copy, data, len);
    enqueue_write(s, ns, key, block_index, copy, len, 1);
}

int zs_kvstore_put(zs_kvstore_t *s, const zs_kv_ns_t *ns, const zs_kv_key_t *key, uint64_t block_index,
                   const void *data, size_t len, zs_err_t *err) {
    int rc = zs_kv_host_put(s->host, ns, key, block_index, data, len, err);
    if (rc != ZS_OK && rc != ZS_EBUSY) return rc; /* a block of the wrong size goes nowhere */
    write_back(s, ns, key, block_index, data, len);
    return rc;
}

int zs_kvstore_reserve(zs_kvstore_t *s, const zs_kv_ns_t *ns, const zs_kv_key_t *key, uint64_t block_index,
                       void **slot, zs_err_t *err) {
    return zs_kv_host_reserve(s->host, ns, key, block_index, slot, err);
}

void zs_kvstore_commit(zs_kvstore_t *s, const zs_kv_ns_t *ns, const zs_kv_key_t *key, uint64_t block_index,
                       const void *slot, int write_to_disk) {
    int queue = write_to_disk && s->disk != NULL && !zs_kv_disk_contains(s->disk, ns, key);
    /* the commit keeps the reservation's pin for the queued write, which releases it */
    if (zs_kv_host_commit(s->host, key, queue) != ZS_OK || !queue) return;
    enqueue_write(s, ns, key, block_index, slot, s->block_bytes, 0);
}

void zs_kvstore_abort(zs_kvstore_t *s, const zs_kv_key_t *key) { zs_kv_host_abort(s->host, key); }

int zs_kvstore_flush(zs_kvstore_t *s, zs_err_t *err) {
    if (s->disk == NULL) return ZS_OK;
    pthread_mutex_lock(&s->mu);
    while (s->qlen > 0 || s->writing) pthread_cond_wait(&s->cv_idle, &s->mu);
    zs_err_t we = s->write_err;
    memset(&s->write_err, 0, sizeof s->write_err);
    pthread_mutex_unlock(&s->mu);
    if (we.code != 0) return zs_err_set(err, we.code, "kv store flush: %s", we.msg);
    return ZS_OK;
}

void zs_kvstore_stats(zs_kvstore_t *s, zs_kvstore_stats_t *out) {
    memset(out, 0, sizeof *out);
    zs_kv_host_stats(s->host, &out->host);
    if (s->disk) zs_kv_disk_stats(s->disk, &out->disk);
    pthread_mutex_lock(&s->mu);
    out->writes_queued = s->queued;
    out->writes_done = s->done;
    out->writes_dropped = s->dropped;
    out->write_errors = s->write_errors;
    out->writes_pending = s->qlen + (uint64_t)s->writing;
    out->promotions = s->promotions;
    pthread_mutex_unlock(&s->mu);
}
