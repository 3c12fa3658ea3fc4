/* The kvstore store: host + disk tiers, longest-prefix lookup, fetch with promotion, put with
 * asynchronous write-back from one writer thread through a bounded queue. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "kvstore/kv_internal.h"

typedef struct kvs_item {
    zs_kv_ns_t ns;
    zs_kv_key_t key;
    uint64_t block_index;
    void *data;
    size_t len;
} kvs_item_t;

struct zs_kvstore {
    zs_kv_host_t *host;
    zs_kv_disk_t *disk;           /* NULL: no disk tier */
    pthread_mutex_t mu;
    pthread_cond_t cv_work, cv_idle;
    pthread_t writer;
    int writer_started, stopping, writing;
    kvs_item_t *q;
    uint32_t qcap, qhead, qlen;
    uint64_t queued, done, dropped, write_errors, promotions;
    zs_err_t write_err;           /* first write error since the last flush */
};

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
        int rc = zs_kv_disk_put(s->disk, &it.ns, &it.key, it.block_index, it.data, it.len, &e);
        free(it.data);
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

int zs_kvstore_open(const zs_kvstore_opts_t *opts, zs_kvstore_t **out, zs_err_t *err) {
    *out = NULL;
    zs_kvstore_t *s = calloc(1, sizeof *s);
    if (s == NULL) return zs_err_set(err, ZS_ENOMEM, "kv store: out of memory");
    int rc = zs_kv_host_open(opts->host_capacity, &s->host, err);
    if (rc != ZS_OK) {
        free(s);
        return rc;
    }
    int mu = pthread_mutex_init(&s->mu, NULL), c1 = pthread_cond_init(&s->cv_work, NULL),
        c2 = pthread_cond_init(&s->cv_idle, NULL);
    if (mu != 0 || c1 != 0 || c2 != 0) {
        if (mu == 0) pthread_mutex_destroy(&s->mu);
        if (c1 == 0) pthread_cond_destroy(&s->cv_work);
        if (c2 == 0) pthread_cond_destroy(&s->cv_idle);
        zs_kv_host_close(s->host);
        free(s);
        return zs_err_set(err, ZS_EIO, "kv store: pthread mutex/cond init failed");
    }
    if (opts->disk.dir != NULL) {
        s->qcap = opts->queue_depth ? opts->queue_depth : 64;
        s->q = calloc(s->qcap, sizeof *s->q);
        if (s->q == NULL) rc = zs_err_set(err, ZS_ENOMEM, "kv store: out of memory for a queue of %u", s->qcap);
        if (rc == ZS_OK) rc = zs_kv_disk_open(&opts->disk, &s->disk, err);
        if (rc == ZS_OK) {
            int t = pthread_create(&s->writer, NULL, kvs_writer_main, s);
            if (t != 0) rc = zs_err_set(err, ZS_EIO, "kv store: cannot start the disk writer thread (%d)", t);
            else s->writer_started = 1;
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
    if (s->writer_started) {
        pthread_mutex_lock(&s->mu);
        s->stopping = 1;
        pthread_cond_broadcast(&s->cv_work);
        pthread_mutex_unlock(&s->mu);
        pthread_join(s->writer, NULL);
    }
    for (uint32_t i = 0; i < s->qlen; i++) free(s->q[(s->qhead + i) % s->qcap].data);
    free(s->q);
    zs_kv_disk_close(s->disk);
    zs_kv_host_close(s->host);
    pthread_cond_destroy(&s->cv_idle);
    pthread_cond_destroy(&s->cv_work);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

size_t zs_kvstore_lookup(zs_kvstore_t *s, const zs_kv_ns_t *ns, const zs_kv_key_t *keys, size_t n,
                         zs_kv_tier_t *tiers) {
    size_t i = 0;
    for (; i < n; i++) {
        zs_kv_tier_t t = ZS_KV_TIER_NONE;
        if (zs_kv_host_contains(s->host, ns, &keys[i])) t = ZS_KV_TIER_HOST;
        else if (s->disk != NULL && zs_kv_disk_contains(s->disk, ns, &keys[i])) t = ZS_KV_TIER_DISK;
        if (t == ZS_KV_TIER_NONE) break;
        if (tiers) tiers[i] = t;
    }
    return i;
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
    /* Promote; a block the host tier cannot take (too big, pinned full) just stays on disk. */
    if (zs_kv_host_put(s->host, ns, key, 0 /* chain position not tracked on promotion */, buf, got, NULL) ==
        ZS_OK) {
        pthread_mutex_lock(&s->mu);
        s->promotions++;
        pthread_mutex_unlock(&s->mu);
    }
    return ZS_OK;
}

int zs_kvstore_put(zs_kvstore_t *s, const zs_kv_ns_t *ns, const zs_kv_key_t *key, uint64_t block_index,
                   const void *data, size_t len, zs_err_t *err) {
    int rc = zs_kv_host_put(s->host, ns, key, block_index, data, len, err);
    if (s->disk == NULL || (rc != ZS_OK && rc != ZS_ERANGE && rc != ZS_EBUSY)) return rc;
    if (zs_kv_disk_contains(s->disk, ns, key)) return rc;
    void *copy = malloc(len);
    if (copy == NULL) {
        pthread_mutex_lock(&s->mu);
        s->dropped++;
        pthread_mutex_unlock(&s->mu);
        return rc;
    }
    memcpy(copy, data, len);
    pthread_mutex_lock(&s->mu);
    if (s->qlen == s->qcap || s->stopping) {
        s->dropped++;
        pthread_mutex_unlock(&s->mu);
        free(copy);
        return rc;
    }
    kvs_item_t *it = &s->q[(s->qhead + s->qlen) % s->qcap];
    it->ns = *ns;
    it->key = *key;
    it->block_index = block_index;
    it->data = copy;
    it->len = len;
    s->qlen++;
    s->queued++;
    pthread_cond_signal(&s->cv_work);
    pthread_mutex_unlock(&s->mu);
    return rc;
}

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
    out->promotions = s->promotions;
    pthread_mutex_unlock(&s->mu);
}
