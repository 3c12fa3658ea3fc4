/* Prefix prediction (see kv_predict.h). Prefixes are compared through their chained block
 * hashes (the prefix cache's, seeded by the namespace): two prompts share their first L
 * blocks exactly when their first L hashes agree, and the tokens are compared before an entry
 * is created or counted, so a hash collision cannot merge different prefixes. */
#include "server/kv_predict.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "server/prefix_cache.h"

#define MAX_SUCC 4

typedef struct kvp_prompt {         /* a remembered prompt: its full blocks */
    zs_kv_ns_t ns;
    int32_t *ids;
    uint64_t *h;
    int32_t nb;
} kvp_prompt_t;

typedef struct kvp_entry {
    uint64_t id;                    /* 0: slot free */
    zs_kv_ns_t ns;
    int32_t *ids;
    uint64_t *h;
    int32_t nb;
    double count, t;                /* decayed count at time t */
    int prefetched;
    struct {
        uint64_t to;
        double n;
    } succ[MAX_SUCC];
} kvp_entry_t;

typedef struct kvp_last {           /* per tenant: the entry its last request used */
    zs_kv_ns_t ns;
    uint64_t entry;
} kvp_last_t;

struct zs_kvp {
    zs_kvp_opts_t o;
    kvp_entry_t *e;
    kvp_prompt_t *recent;
    int nrecent, next_recent;
    kvp_last_t *last;
    int nlast;
    uint64_t next_id;
};

static double decayed(const zs_kvp_t *p, const kvp_entry_t *e, double now) {
    double dt = now - e->t;
    return dt <= 0 ? e->count : e->count * exp2(-dt / p->o.half_life_s);
}

int zs_kvp_create(const zs_kvp_opts_t *o, zs_kvp_t **out) {
    *out = NULL;
    zs_kvp_t *p = calloc(1, sizeof *p);
    if (p == NULL || o->block_size < 1) {
        free(p);
        return -1;
    }
    p->o = *o;
    if (p->o.max_entries <= 0) p->o.max_entries = 64;
    if (p->o.recent <= 0) p->o.recent = 32;
    if (p->o.half_life_s <= 0) p->o.half_life_s = 600;
    if (p->o.max_blocks <= 0) p->o.max_blocks = 8192;
    p->e = calloc((size_t)p->o.max_entries, sizeof *p->e);
    p->recent = calloc((size_t)p->o.recent, sizeof *p->recent);
    p->last = calloc((size_t)p->o.max_entries, sizeof *p->last);
    if (p->e == NULL || p->recent == NULL || p->last == NULL) {
        zs_kvp_free(p);
        return -1;
    }
    p->next_id = 1;
    *out = p;
    return 0;
}

static void entry_clear(kvp_entry_t *e) {
    free(e->ids);
    free(e->h);
    memset(e, 0, sizeof *e);
}

void zs_kvp_free(zs_kvp_t *p) {
    if (p == NULL) return;
    for (int i = 0; p->e && i < p->o.max_entries; i++) entry_clear(&p->e[i]);
    for (int i = 0; p->recent && i < p->o.recent; i++) {
        free(p->recent[i].ids);
        free(p->recent[i].h);
    }
    free(p->e);
    free(p->recent);
    free(p->last);
    free(p);
}

int zs_kvp_entries(const zs_kvp_t *p) {
    int n = 0;
    for (int i = 0; i < p->o.max_entries; i++) n += p->e[i].id != 0;
    return n;
}

static int ns_eq(const zs_kv_ns_t *a, const zs_kv_ns_t *b) { return memcmp(a->b, b->b, sizeof a->b) == 0; }

/* Leading equal hashes of two chains (equal hashes imply equal earlier blocks too). */
static int32_t common(const uint64_t *a, int32_t na, const uint64_t *b, int32_t nb) {
    int32_t n = na < nb ? na : nb, k = 0;
    while (k < n && a[k] == b[k]) k++;
    return k;
}

static kvp_entry_t *find_entry(zs_kvp_t *p, uint64_t id) {
    for (int i = 0; id && i < p->o.max_entries; i++)
        if (p->e[i].id == id) return &p->e[i];
    return NULL;
}

/* A free slot, or the slot of the entry with the lowest decayed count. */
static kvp_entry_t *victim(zs_kvp_t *p, double now) {
    kvp_entry_t *best = NULL;
    for (int i = 0; i < p->o.max_entries; i++) {
        kvp_entry_t *e = &p->e[i];
        if (e->id == 0) return e;
        if (best == NULL || decayed(p, e, now) < decayed(p, best, now)) best = e;
    }
    entry_clear(best);
    return best;
}

static void bump(zs_kvp_t *p, kvp_entry_t *e, double now, double by) {
    e->count = decayed(p, e, now) + by;
    e->t = now;
    e->prefetched = 0;
}

static void note_transition(zs_kvp_t *p, const zs_kv_ns_t *ns, uint64_t to) {
    kvp_last_t *l = NULL;
    for (int i = 0; i < p->nlast && l == NULL; i++)
        if (ns_eq(&p->last[i].ns, ns)) l = &p->last[i];
    if (l == NULL) {
        if (p->nlast < p->o.max_entries) l = &p->last[p->nlast++];
        else l = &p->last[to % (uint64_t)p->o.max_entries]; /* full: reuse a slot */
        l->ns = *ns;
        l->entry = 0;
    }
    kvp_entry_t *from = find_entry(p, l->entry);
    if (from != NULL && l->entry != to) {
        int k = -1, weakest = 0;
        for (int i = 0; i < MAX_SUCC; i++) {
            if (from->succ[i].to == to) k = i;
            if (from->succ[i].n < from->succ[weakest].n) weakest = i;
        }
        if (k < 0) {
            k = weakest;
            from->succ[k].to = to;
            from->succ[k].n = 0;
        }
        from->succ[k].n += 1;
    }
    l->entry = to;
}

int zs_kvp_observe(zs_kvp_t *p, const zs_kv_ns_t *ns, const int32_t *ids, int64_t n, double now) {
    const int32_t bs = p->o.block_size;
    int64_t nb64 = n / bs;
    int32_t nb = nb64 > p->o.max_blocks ? p->o.max_blocks : (int32_t)nb64;
    if (nb < 1) return 0;
    uint64_t *h = malloc((size_t)nb * sizeof *h);
    if (h == NULL) return -1;
    zs_pcache_hashes(ns, ids, nb, bs, h);
    /* the longest entry this prompt starts with */
    kvp_entry_t *best = NULL;
    for (int i = 0; i < p->o.max_entries; i++) {
        kvp_entry_t *e = &p->e[i];
        if (e->id == 0 || e->nb > nb || !ns_eq(&e->ns, ns) || h[e->nb - 1] != e->h[e->nb - 1]) continue;
        if (memcmp(e->ids, ids, (size_t)e->nb * bs * sizeof *ids) != 0) continue;
        if (best == NULL || e->nb > best->nb) best = e;
    }
    /* the longest prefix shared with a remembered prompt */
    int32_t share = 0;
    const kvp_prompt_t *with = NULL;
    for (int i = 0; i < p->nrecent; i++) {
        const kvp_prompt_t *r = &p->recent[i];
        if (!ns_eq(&r->ns, ns)) continue;
        int32_t c = common(r->h, r->nb, h, nb);
        if (c > share && memcmp(r->ids, ids, (size_t)c * bs * sizeof *ids) == 0) {
            share = c;
            with = r;
        }
    }
    kvp_entry_t *used = best;
    if (with != NULL && (best == NULL || share > best->nb)) { /* a newly seen recurring prefix */
        kvp_entry_t *e = victim(p, now);
        e->ids = malloc((size_t)share * bs * sizeof *ids);
        e->h = malloc((size_t)share * sizeof *e->h);
        if (e->ids == NULL || e->h == NULL) {
            entry_clear(e);
            free(h);
            return -1;
        }
        memcpy(e->ids, ids, (size_t)share * bs * sizeof *ids);
        memcpy(e->h, h, (size_t)share * sizeof *h);
        e->nb = share;
        e->ns = *ns;
        e->id = p->next_id++;
        e->count = 1; /* the earlier prompt */
        e->t = now;
        used = e;
    }
    if (used != NULL) {
        bump(p, used, now, 1);
        if (best != NULL && best != used) bump(p, best, now, 1);
        note_transition(p, ns, used->id);
    }
    /* remember the prompt */
    kvp_prompt_t *r = &p->recent[p->next_recent];
    free(r->ids);
    free(r->h);
    memset(r, 0, sizeof *r);
    r->ids = malloc((size_t)nb * bs * sizeof *ids);
    if (r->ids == NULL) {
        free(h);
        return -1;
    }
    memcpy(r->ids, ids, (size_t)nb * bs * sizeof *ids);
    r->h = h;
    r->nb = nb;
    r->ns = *ns;
    p->next_recent = (p->next_recent + 1) % p->o.recent;
    if (p->nrecent < p->o.recent) p->nrecent++;
    return 0;
}

static int listed(const zs_kvp_pred_t *out, int n, uint64_t id) {
    for (int i = 0; i < n; i++)
        if (out[i].entry == id) return 1;
    return 0;
}

int zs_kvp_predict(zs_kvp_t *p, double now, double min_count, zs_kvp_pred_t *out, int k) {
    int n = 0;
    /* successors of each tenant's last entry, most frequent first */
    for (int i = 0; i < p->nlast && n < k; i++) {
        const kvp_entry_t *from = find_entry(p, p->last[i].entry);
        if (from == NULL) continue;
        for (int pass = 0; pass < MAX_SUCC && n < k; pass++) {
            int b = -1;
            for (int j = 0; j < MAX_SUCC; j++) {
                const kvp_entry_t *to = find_entry(p, from->succ[j].to);
                if (to == NULL || to->prefetched || from->succ[j].n < min_count || listed(out, n, to->id)) continue;
                if (b < 0 || from->succ[j].n > from->succ[b].n) b = j;
            }
            if (b < 0) break;
            const kvp_entry_t *to = find_entry(p, from->succ[b].to);
            out[n++] = (zs_kvp_pred_t){.entry = to->id, .ns = to->ns, .ids = to->ids, .nblocks = to->nb,
                                       .score = from->succ[b].n, .successor = 1};
        }
    }
    /* then the most used entries */
    while (n < k) {
        const kvp_entry_t *b = NULL;
        double bs = 0;
        for (int i = 0; i < p->o.max_entries; i++) {
            const kvp_entry_t *e = &p->e[i];
            if (e->id == 0 || e->prefetched || listed(out, n, e->id)) continue;
            double d = decayed(p, e, now);
            if (d >= min_count && (b == NULL || d > bs)) {
                b = e;
                bs = d;
            }
        }
        if (b == NULL) break;
        out[n++] = (zs_kvp_pred_t){.entry = b->id, .ns = b->ns, .ids = b->ids, .nblocks = b->nb, .score = bs};
    }
    return n;
}

void zs_kvp_mark_prefetched(zs_kvp_t *p, uint64_t entry) {
    kvp_entry_t *e = find_entry(p, entry);
    if (e) e->prefetched = 1;
}
