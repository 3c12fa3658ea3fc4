/* Device budgets, reservations and placement of model starts (residency.h). Lock order:
 * zs_res_t.mu before a scheduler's mutex (zs_sched_idle_s, zs_sched_request_unload); the
 * scheduler threads call in here without holding their own. */
#include "server/residency.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#include "common/clock.h"
#include "zerostart/bandwidth.h"

int zs_res_init(zs_res_t *r, const zs_slog_t *log) {
    memset(r, 0, sizeof *r);
    r->log = *log;
    atomic_init(&r->stop, 0);
    pthread_condattr_t ca;
    if (pthread_condattr_init(&ca) != 0) return -1;
    int ok = pthread_condattr_setclock(&ca, CLOCK_MONOTONIC) == 0 && pthread_cond_init(&r->cv, &ca) == 0;
    pthread_condattr_destroy(&ca);
    if (!ok) return -1;
    if (pthread_mutex_init(&r->mu, NULL) != 0) {
        pthread_cond_destroy(&r->cv);
        return -1;
    }
    for (int i = 0; i < ZS_SERVER_MAX_MODELS; i++) r->models[i].dev = -1;
    r->ready = 1;
    return 0;
}

void zs_res_destroy(zs_res_t *r) {
    if (!r->ready) return;
    atomic_store(&r->stop, 1);
    if (r->probe_started) pthread_join(r->probe, NULL);
    pthread_cond_destroy(&r->cv);
    pthread_mutex_destroy(&r->mu);
    r->ready = 0;
}

static int same_dev(zs_device_t a, zs_device_t b) {
    return a.kind == b.kind && (a.kind == ZS_DEV_CPU || a.index == b.index);
}

int zs_res_device(zs_res_t *r, zs_device_t d, uint64_t budget) {
    pthread_mutex_lock(&r->mu);
    int slot = -1;
    for (int i = 0; i < r->ndev && slot < 0; i++)
        if (same_dev(r->devs[i].dev, d)) slot = i;
    if (slot < 0 && r->ndev < ZS_RES_MAX_DEV) {
        slot = r->ndev++;
        r->devs[slot] = (zs_res_dev_t){.dev = d, .budget = budget};
    }
    pthread_mutex_unlock(&r->mu);
    return slot;
}

void zs_res_model(zs_res_t *r, int idx, const char *name, uint32_t allowed, uint64_t footprint,
                  uint64_t weight_bytes, zs_place_tier_t tier) {
    pthread_mutex_lock(&r->mu);
    zs_res_model_t *m = &r->models[idx];
    m->name = name;
    m->allowed = allowed;
    m->dev = -1;
    m->footprint = footprint;
    m->weight_bytes = weight_bytes;
    m->tier = tier;
    if (idx >= r->nmodels) r->nmodels = idx + 1;
    pthread_mutex_unlock(&r->mu);
}

void zs_res_set_sched(zs_res_t *r, int idx, zs_sched_t *s) {
    pthread_mutex_lock(&r->mu);
    r->models[idx].sched = s;
    pthread_mutex_unlock(&r->mu);
}

static void dev_name(const zs_device_t *d, char *buf, size_t cap) {
    if (d->kind == ZS_DEV_CPU) snprintf(buf, cap, "cpu");
    else snprintf(buf, cap, "cuda:%d", d->index);
}

/* Placement's view of a device's memory (r->mu held), no idle models listed yet. */
static void dev_view(const zs_res_dev_t *dv, int allowed, zs_place_gpu_t *g) {
    memset(g, 0, sizeof *g);
    g->allowed = allowed;
    g->total_bytes = dv->budget ? dv->budget : UINT64_MAX / 4;
    g->free_bytes = g->total_bytes > dv->used ? g->total_bytes - dv->used : 0;
    g->h2d_gbps = dv->h2d_gbps;
}

/* Reserves me's footprint on the placed slot (r->mu held) and describes the decision; the device
 * name goes to dn. */
static void reserve(zs_res_t *r, zs_res_model_t *me, const zs_place_result_t *pr, zs_res_decision_t *d, char *dn,
                    size_t cap) {
    r->devs[pr->gpu].used += me->footprint;
    me->reserved = me->footprint;
    me->dev = pr->gpu;
    me->loading = 1;
    d->dev = pr->gpu;
    d->device = r->devs[pr->gpu].dev;
    d->est_s = pr->est_s;
    dev_name(&r->devs[pr->gpu].dev, dn, cap);
}

static void wait_a_bit(zs_res_t *r, double s) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_nsec += (long)(s * 1e9);
    while (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    pthread_cond_timedwait(&r->cv, &r->mu, &ts);
}

int zs_res_acquire(zs_res_t *r, int idx, const atomic_int *abort, zs_res_decision_t *d, zs_err_t *err) {
    memset(d, 0, sizeof *d);
    d->dev = -1;
    double t0 = zs_now();
    char evicted[160] = "";
    pthread_mutex_lock(&r->mu);
    zs_res_model_t *me = &r->models[idx];
    int rc = 0, waiting = 0;
    for (;;) {
        if (abort && atomic_load(abort)) {
            rc = zs_err_set(err, ZS_ECANCELED, "the server is shutting down");
            break;
        }
        zs_place_gpu_t g[ZS_RES_MAX_DEV];
        for (int i = 0; i < r->ndev; i++) {
            dev_view(&r->devs[i], (me->allowed >> i) & 1u, &g[i]);
            for (int j = 0; j < r->nmodels && g[i].nidle < ZS_PLACE_MAX_IDLE; j++) {
                zs_res_model_t *o = &r->models[j];
                if (j == idx || o->dev != i || o->reserved == 0 || o->sched == NULL) continue;
                /* an unused pre-warm (ready or still loading) is speculative: it goes first */
                int pw = zs_sched_prewarm_unused(o->sched);
                if (!pw && (o->loading || zs_sched_state(o->sched) != ZS_MODEL_READY || !zs_sched_idle(o->sched)))
                    continue;
                g[i].idle[g[i].nidle++] = (zs_place_idle_t){.model = j, .bytes = o->reserved,
                                                            .idle_s = pw ? 1e9 : zs_sched_idle_s(o->sched),
                                                            .reload_s = pw ? 0 : o->load_s};
            }
        }
        zs_place_model_t pm = {.bytes = me->footprint, .weight_bytes = me->weight_bytes, .tier = me->tier,
                               .read_gbps = r->read_gbps};
        zs_place_result_t pr;
        zs_place(g, r->ndev, &pm, &pr);
        if (pr.gpu == ZS_PLACE_NEVER) {
            uint64_t biggest = 0;
            for (int i = 0; i < r->ndev; i++)
                if (g[i].allowed && g[i].total_bytes > biggest) biggest = g[i].total_bytes;
            rc = zs_err_set(err, ZS_ENOMEM,
                            "model %s needs %.1f MiB of device memory (weights, KV cache, buffers) but "
                            "the device budget is %.1f MiB (--device-mem, --kv-mem)", me->name,
                            (double)me->footprint / 1048576.0, (double)biggest / 1048576.0);
            break;
        }
        if (pr.gpu >= 0 && pr.nevict == 0) {
            char dn[32];
            reserve(r, me, &pr, d, dn, sizeof dn);
            if (evicted[0]) snprintf(d->text, sizeof d->text, "%s after unloading %s", dn, evicted);
            else snprintf(d->text, sizeof d->text, "%s (free memory)", dn);
            break;
        }
        if (pr.gpu >= 0) {
            for (int k = 0; k < pr.nevict; k++) {
                zs_res_model_t *v = &r->models[pr.evict[k]];
                zs_sched_request_unload(v->sched, 0);
                if (strstr(evicted, v->name) == NULL && strlen(evicted) + strlen(v->name) + 3 < sizeof evicted) {
                    if (evicted[0]) strcat(evicted, ", ");
                    strcat(evicted, v->name);
                }
            }
        }
        if (!waiting) r->nwaiting++; /* no pre-warm starts meanwhile */
        waiting = 1;
        wait_a_bit(r, 0.05); /* woken when memory is released; re-plan at least every 50 ms */
    }
    if (waiting) r->nwaiting--;
    pthread_mutex_unlock(&r->mu);
    d->wait_s = zs_now() - t0;
    if (rc == 0 && (evicted[0] || d->wait_s > 0.05))
        zs_slog(&r->log, ZS_LOG_INFO, NULL, "placement: model %s on %s after waiting %.3f s for memory",
                me->name, d->text, d->wait_s);
    return rc;
}

/* Idle device slots among `allowed` (r->mu held); see zs_res_idle_devices. */
static uint32_t idle_devices(zs_res_t *r, uint32_t allowed) {
    if (r->nwaiting > 0) return 0;
    uint32_t busy = 0;
    for (int j = 0; j < r->nmodels; j++) {
        zs_res_model_t *o = &r->models[j];
        if (o->sched == NULL) continue;
        int active = zs_sched_active(o->sched) > 0;
        if (active && o->dev < 0) return 0; /* requests wait for a start */
        if (o->dev >= 0 && (active || o->loading)) busy |= 1u << o->dev;
    }
    return allowed & ~busy;
}

uint32_t zs_res_idle_devices(zs_res_t *r, int idx) {
    pthread_mutex_lock(&r->mu);
    uint32_t m = idle_devices(r, r->models[idx].allowed);
    pthread_mutex_unlock(&r->mu);
    return m;
}

int zs_res_acquire_idle(zs_res_t *r, int idx, zs_res_decision_t *d, zs_err_t *err) {
    memset(d, 0, sizeof *d);
    d->dev = -1;
    pthread_mutex_lock(&r->mu);
    zs_res_model_t *me = &r->models[idx];
    uint32_t idle = me->dev < 0 ? idle_devices(r, me->allowed) : 0;
    zs_place_gpu_t g[ZS_RES_MAX_DEV];
    for (int i = 0; i < r->ndev; i++) dev_view(&r->devs[i], (idle >> i) & 1u, &g[i]); /* a pre-warm unloads nothing */
    zs_place_model_t pm = {.bytes = me->footprint, .weight_bytes = me->weight_bytes, .tier = me->tier,
                           .read_gbps = r->read_gbps};
    zs_place_result_t pr;
    int rc = 0;
    if (idle == 0) {
        rc = zs_err_set(err, ZS_EBUSY, "model %s: no idle device (requests running or waiting)", me->name);
    } else if (zs_place(g, r->ndev, &pm, &pr) < 0 || pr.nevict > 0) {
        rc = zs_err_set(err, ZS_EBUSY, "model %s: no idle device has %.1f MiB free", me->name,
                        (double)me->footprint / 1048576.0);
    } else {
        char dn[32];
        reserve(r, me, &pr, d, dn, sizeof dn);
        snprintf(d->text, sizeof d->text, "%s (free memory, idle device: pre-warm)", dn);
    }
    pthread_mutex_unlock(&r->mu);
    return rc;
}

int zs_res_device_busy(zs_res_t *r, int idx) {
    pthread_mutex_lock(&r->mu);
    int dev = r->models[idx].dev, busy = 0;
    for (int j = 0; j < r->nmodels && dev >= 0 && !busy; j++) {
        zs_res_model_t *o = &r->models[j];
        busy = j != idx && o->sched != NULL && zs_sched_active(o->sched) > 0 && (o->dev == dev || o->dev < 0);
    }
    pthread_mutex_unlock(&r->mu);
    return busy;
}

double zs_res_start_estimate(zs_res_t *r, int idx) {
    pthread_mutex_lock(&r->mu);
    zs_res_model_t *m = &r->models[idx];
    double s = m->load_s;
    if (!(s > 0)) {
        double h2d = 0;
        for (int i = 0; i < r->ndev; i++)
            if ((m->allowed >> i) & 1u) h2d = r->devs[i].h2d_gbps;
        s = zs_place_transfer_s(m->weight_bytes, m->tier, r->read_gbps, h2d);
    }
    pthread_mutex_unlock(&r->mu);
    return s;
}

void zs_res_loaded(zs_res_t *r, int idx, uint64_t footprint, zs_place_tier_t next_tier, double load_s,
                   double read_gbps) {
    pthread_mutex_lock(&r->mu);
    zs_res_model_t *m = &r->models[idx];
    if (m->dev >= 0 && footprint > 0) {
        zs_res_dev_t *dv = &r->devs[m->dev];
        if (dv->budget && footprint > dv->budget) footprint = dv->budget; /* it ran: it must fit again */
        dv->used = dv->used - m->reserved + footprint;
        m->reserved = footprint;
        m->footprint = footprint;
    }
    m->loading = 0;
    m->tier = next_tier;
    if (load_s > 0) m->load_s = load_s;
    if (read_gbps > 0) r->read_gbps = r->read_gbps > 0 ? 0.5 * r->read_gbps + 0.5 * read_gbps : read_gbps;
    pthread_mutex_unlock(&r->mu);
}

void zs_res_release(zs_res_t *r, int idx) {
    pthread_mutex_lock(&r->mu);
    zs_res_model_t *m = &r->models[idx];
    if (m->dev >= 0) {
        zs_res_dev_t *dv = &r->devs[m->dev];
        dv->used = dv->used >= m->reserved ? dv->used - m->reserved : 0;
    }
    m->dev = -1;
    m->reserved = 0;
    m->loading = 0;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

void zs_res_where(zs_res_t *r, int idx, char *buf, size_t cap) {
    pthread_mutex_lock(&r->mu);
    zs_res_model_t *m = &r->models[idx];
    if (m->dev >= 0) dev_name(&r->devs[m->dev].dev, buf, cap);
    else if (cap) buf[0] = 0;
    pthread_mutex_unlock(&r->mu);
}

int zs_res_snapshot(zs_res_t *r, zs_res_dev_t *devs, int cap, double *read_gbps) {
    pthread_mutex_lock(&r->mu);
    int n = r->ndev < cap ? r->ndev : cap;
    memcpy(devs, r->devs, (size_t)n * sizeof *devs);
    if (read_gbps) *read_gbps = r->read_gbps;
    pthread_mutex_unlock(&r->mu);
    return n;
}

static void *probe_main(void *arg) {
    zs_res_t *r = arg;
    zs_device_t devs[ZS_RES_MAX_DEV];
    pthread_mutex_lock(&r->mu);
    int n = r->ndev;
    for (int i = 0; i < n; i++) devs[i] = r->devs[i].dev;
    pthread_mutex_unlock(&r->mu);
    for (int i = 0; i < n && !atomic_load(&r->stop); i++) {
        if (devs[i].kind != ZS_DEV_CUDA) continue;
        zs_bw_result_t res;
        zs_err_t err = {0};
        if (zs_bw_h2d(devs[i].index, (size_t)256 << 20, 4, 3, &res, &err) == 0) {
            pthread_mutex_lock(&r->mu);
            r->devs[i].h2d_gbps = res.gbps;
            pthread_mutex_unlock(&r->mu);
            zs_slog(&r->log, ZS_LOG_INFO, NULL, "bandwidth: pinned host -> cuda:%d %.1f GB/s", devs[i].index,
                    res.gbps);
        } else {
            zs_slog(&r->log, ZS_LOG_WARN, NULL, "bandwidth: cuda:%d probe failed: %s", devs[i].index, err.msg);
        }
    }
    if (r->probe_file[0] && !atomic_load(&r->stop)) {
        const char *paths[1] = {r->probe_file};
        zs_bw_result_t res;
        zs_err_t err = {0};
        if (zs_bw_read_files(paths, 1, 0, 4, (size_t)4 << 20, &res, &err) == 0) {
            pthread_mutex_lock(&r->mu);
            r->read_gbps = res.gbps;
            pthread_mutex_unlock(&r->mu);
            zs_slog(&r->log, ZS_LOG_INFO, NULL, "bandwidth: buffered reads of %s %.2f GB/s", r->probe_file, res.gbps);
        } else {
            zs_slog(&r->log, ZS_LOG_WARN, NULL, "bandwidth: read probe failed: %s", err.msg);
        }
    }
    return NULL;
}

void zs_res_start_probes(zs_res_t *r, const char *probe_file) {
    snprintf(r->probe_file, sizeof r->probe_file, "%s", probe_file ? probe_file : "");
    int cuda = 0;
    for (int i = 0; i < r->ndev; i++) cuda |= r->devs[i].dev.kind == ZS_DEV_CUDA;
    if (!cuda && !r->probe_file[0]) return;
    if (pthread_create(&r->probe, NULL, probe_main, r) == 0) r->probe_started = 1;
    else zs_slog(&r->log, ZS_LOG_WARN, NULL, "bandwidth: cannot start the probe thread");
}
