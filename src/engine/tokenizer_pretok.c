/* Everything between the raw text and the BPE model: splitting out added tokens (leftmost-
 * longest, with single_word/lstrip/rstrip as tokenizers' AddedVocabulary does), the
 * normalizers (Prepend, Replace, NFC/NFD/NFKC/NFKD) and the pre-tokenizers (ByteLevel,
 * Split, Metaspace, Digits), each working on a list of pieces that remember where their
 * bytes came from in the original text (needed by Metaspace's prepend_scheme "first"). */
#include "engine/tokenizer_internal.h"
#include "engine/unicode_normalize.h"

#include <stdlib.h>
#include <string.h>

/* ---- piece lists ------------------------------------------------------------------------ */

void tok_pieces_free(tok_pieces *p) {
    for (size_t i = 0; i < p->n; i++) free(p->v[i].orig);
    free(p->v);
    memset(p, 0, sizeof *p);
}

/* Appends a piece of len bytes with uninitialised contents; empty pieces are dropped
 * (returns ZS_OK with *out = NULL). */
static int pieces_add(tok_pieces *p, size_t len, int32_t added, tok_piece **out) {
    *out = NULL;
    if (len == 0) return ZS_OK;
    if (p->n == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 16;
        tok_piece *v = realloc(p->v, cap * sizeof *v);
        if (v == NULL) return ZS_ENOMEM;
        p->v = v;
        p->cap = cap;
    }
    if (len > (SIZE_MAX - 1) / 5) return ZS_ENOMEM;
    uint32_t *block = malloc(len * sizeof(uint32_t) + len + 1);
    if (block == NULL) return ZS_ENOMEM;
    tok_piece *pc = &p->v[p->n++];
    pc->orig = block;
    pc->s = (char *)(block + len);
    pc->s[len] = '\0';
    pc->len = len;
    pc->added = added;
    *out = pc;
    return ZS_OK;
}

/* Appends src[a..b) as a new piece. */
static int pieces_add_slice(tok_pieces *p, const tok_piece *src, size_t a, size_t b,
                            int32_t added) {
    tok_piece *pc;
    int rc = pieces_add(p, b - a, added, &pc);
    if (rc || pc == NULL) return rc;
    memcpy(pc->s, src->s + a, b - a);
    memcpy(pc->orig, src->orig + a, (b - a) * sizeof(uint32_t));
    return ZS_OK;
}

/* Moves a piece into p (ownership transferred). */
static int pieces_move(tok_pieces *p, tok_piece *src) {
    if (p->n == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 16;
        tok_piece *v = realloc(p->v, cap * sizeof *v);
        if (v == NULL) return ZS_ENOMEM;
        p->v = v;
        p->cap = cap;
    }
    p->v[p->n++] = *src;
    src->orig = NULL;
    src->s = NULL;
    return ZS_OK;
}

/* ---- added tokens --------------------------------------------------------------------- */

static size_t prev_char_start(const char *s, size_t end) {
    size_t i = end;
    while (i > 0) {
        i--;
        if (((unsigned char)s[i] & 0xC0) != 0x80) break;
    }
    return i;
}

static int is_word_at(const zs_tok_t *tok, const char *s, size_t len, size_t at,
                      pcre2_match_data *md) {
    int m = pcre2_match(tok->word_re, (PCRE2_SPTR)s, len, at,
                        PCRE2_ANCHORED | PCRE2_NO_UTF_CHECK, md, NULL);
    return m > 0;
}

static int split_added(const zs_tok_t *tok, const tok_matchset *ms, int use_norm,
                       tok_piece *p, tok_pieces *out, zs_err_t *err) {
    const char *s = p->s;
    size_t len = p->len;
    size_t start_offset = 0, pos = 0;
    pcre2_match_data *md = NULL;
    int rc = ZS_OK;
    while (pos < len) {
        unsigned b = (unsigned char)s[pos];
        const tok_added *hit = NULL;
        for (uint32_t k = ms->first[b]; k < ms->first[b + 1]; k++) {
            const tok_added *a = &tok->added[ms->idx[k]];
            const char *c = use_norm ? a->norm : a->content;
            size_t cl = use_norm ? a->norm_len : a->len;
            if (cl <= len - pos && memcmp(s + pos, c, cl) == 0) {
                hit = a;
                break; /* sorted longest first */
            }
        }
        if (hit == NULL) {
            pos++;
            continue;
        }
        size_t start = pos, stop = pos + (use_norm ? hit->norm_len : hit->len);
        pos = stop;
        if (hit->single_word) {
            if (md == NULL && (md = pcre2_match_data_create(4, NULL)) == NULL) {
                rc = ZS_ENOMEM;
                break;
            }
            int start_space = start == 0 || !is_word_at(tok, s, len, prev_char_start(s, start), md);
            int stop_space = stop == len || !is_word_at(tok, s, len, stop, md);
            if (!start_space || !stop_space) continue;
        }
        if (hit->lstrip) {
            size_t ns = start;
            while (ns > 0) {
                size_t cs = prev_char_start(s, ns);
                uint32_t cp;
                tok_utf8_decode(s + cs, &cp);
                if (!tok_is_whitespace(cp)) break;
                ns = cs;
            }
            start = ns > start_offset ? ns : start_offset;
        }
        if (hit->rstrip) {
            while (stop < len) {
                uint32_t cp;
                size_t cl = tok_utf8_decode(s + stop, &cp);
                if (!tok_is_whitespace(cp)) break;
                stop += cl;
            }
        }
        if (stop < start) stop = start;
        if (start > start_offset && (rc = pieces_add_slice(out, p, start_offset, start, -1)))
            break;
        /* an added token is kept even when empty (cannot be: contents are non-empty) */
        if ((rc = pieces_add_slice(out, p, start, stop, hit->id))) break;
        start_offset = stop;
    }
    if (rc == ZS_OK && start_offset < len) rc = pieces_add_slice(out, p, start_offset, len, -1);
    pcre2_match_data_free(md);
    if (rc) return zs_err_set(err, rc, "tokenizer: out of memory splitting added tokens");
    return ZS_OK;
}

/* ---- normalizers ----------------------------------------------------------------------- */

static int prepend(tok_piece *p, const char *str, size_t n, tok_pieces *scratch) {
    tok_piece *np;
    scratch->n = 0;
    int rc = pieces_add(scratch, p->len + n, -1, &np);
    if (rc) return rc;
    memcpy(np->s, str, n);
    memcpy(np->s + n, p->s, p->len);
    for (size_t i = 0; i < n; i++) np->orig[i] = p->orig[0];
    memcpy(np->orig + n, p->orig, p->len * sizeof(uint32_t));
    free(p->orig);
    *p = *np;
    scratch->n = 0;
    return ZS_OK;
}

static int replace(tok_piece *p, const pcre2_code *re, const char *content, size_t clen,
                   zs_err_t *err) {
    tok_spans m = {0};
    int rc = tok_re_find_all(re, p->s, p->len, &m, err);
    if (rc || m.n == 0) {
        tok_spans_free(&m);
        return rc;
    }
    size_t removed = 0;
    for (size_t i = 0; i < m.n; i++) removed += m.v[2 * i + 1] - m.v[2 * i];
    size_t nlen = p->len - removed + m.n * clen;
    tok_pieces tmp = {0};
    tok_piece *np = NULL;
    rc = pieces_add(&tmp, nlen, -1, &np);
    if (rc) {
        tok_spans_free(&m);
        return zs_err_set(err, rc, "tokenizer: out of memory (Replace)");
    }
    size_t o = 0, prev = 0;
    for (size_t i = 0; i <= m.n; i++) {
        size_t a = i < m.n ? m.v[2 * i] : p->len;
        if (np) {
            memcpy(np->s + o, p->s + prev, a - prev);
            memcpy(np->orig + o, p->orig + prev, (a - prev) * sizeof(uint32_t));
        }
        o += a - prev;
        if (i == m.n) break;
        if (np) {
            memcpy(np->s + o, content, clen);
            for (size_t k = 0; k < clen; k++) np->orig[o + k] = p->orig[a];
        }
        o += clen;
        prev = m.v[2 * i + 1];
    }
    tok_spans_free(&m);
    free(p->orig);
    if (np) {
        *p = *np;
    } else { /* everything replaced by nothing */
        p->orig = NULL;
        p->s = NULL;
        p->len = 0;
    }
    free(tmp.v);
    return ZS_OK;
}

/* NFC/NFD/NFKC/NFKD; each output byte keeps the origin of the input character it is
 * aligned to. */
static int unicode_norm(tok_piece *p, int form, zs_err_t *err) {
    char *s;
    size_t n;
    uint32_t *src;
    int rc = unorm_utf8((unorm_form)form, p->s, p->len, &s, &n, &src, err);
    if (rc) return rc;
    tok_pieces tmp = {0};
    tok_piece *np = NULL;
    rc = pieces_add(&tmp, n, -1, &np);
    if (rc == ZS_OK && np) {
        memcpy(np->s, s, n);
        for (size_t i = 0; i < n; i++) np->orig[i] = p->orig[src[i]];
    }
    free(s);
    free(src);
    if (rc) {
        free(tmp.v);
        return zs_err_set(err, rc, "tokenizer: out of memory (Unicode normalizer)");
    }
    free(p->orig);
    if (np) {
        *p = *np;
    } else {
        p->orig = NULL;
        p->s = NULL;
        p->len = 0;
    }
    free(tmp.v);
    return ZS_OK;
}

static int normalize_piece(const zs_tok_t *tok, tok_piece *p, zs_err_t *err) {
    tok_pieces scratch = {0};
    int rc = ZS_OK;
    for (size_t i = 0; i < tok->n_norm && rc == ZS_OK && p->len; i++) {
        const tok_norm_step *st = &tok->norm[i];
        if (st->kind == TN_PREPEND) {
            if ((rc = prepend(p, st->str, st->str_len, &scratch)))
                rc = zs_err_set(err, rc, "tokenizer: out of memory (Prepend)");
        } else if (st->kind == TN_UNICODE) {
            rc = unicode_norm(p, st->form, err);
        } else {
            rc = replace(p, st->re, st->str, st->str_len, err);
        }
    }
    free(scratch.v);
    return rc;
}

int tok_normalize_string(const zs_tok_t *tok, const char *s, size_t len, char **out,
                         size_t *out_len, zs_err_t *err) {
    tok_pieces tmp = {0};
    tok_piece *p;
    *out = NULL;
    *out_len = 0;
    int rc = pieces_add(&tmp, len, -1, &p);
    if (rc) return zs_err_set(err, rc, "tokenizer: out of memory");
    tok_piece pc = {0};
    if (p) {
        memcpy(p->s, s, len);
        for (size_t i = 0; i < len; i++) p->orig[i] = (uint32_t)i;
        pc = *p;
    }
    free(tmp.v);
    rc = normalize_piece(tok, &pc, err);
    if (rc == ZS_OK) {
        *out = malloc(pc.len + 1);
        if (*out == NULL) rc = zs_err_set(err, ZS_ENOMEM, "tokenizer: out of memory");
        else {
            if (pc.len) memcpy(*out, pc.s, pc.len);
            (*out)[pc.len] = '\0';
            *out_len = pc.len;
        }
    }
    free(pc.orig);
    return rc;
}

/* ---- pre-tokenizers --------------------------------------------------------------------- */

/* Splits p by the matches of re per tokenizers' SplitDelimiterBehavior, appending to out. */
static int split_regex(tok_piece *p, const pcre2_code *re, int behavior, int invert,
                       tok_pieces *out, zs_err_t *err) {
    tok_spans m = {0};
    int rc = tok_re_find_all(re, p->s, p->len, &m, err);
    if (rc) {
        tok_spans_free(&m);
        return rc;
    }
    /* segments covering the piece: (start, end, is_match) */
    size_t cap = 2 * m.n + 1, n = 0;
    size_t *seg = malloc(cap * 3 * sizeof *seg);
    if (seg == NULL) {
        tok_spans_free(&m);
        return zs_err_set(err, ZS_ENOMEM, "tokenizer: out of memory (Split)");
    }
    size_t prev = 0;
    for (size_t i = 0; i < m.n; i++) {
        size_t a = m.v[2 * i], b = m.v[2 * i + 1];
        if (a > prev) { seg[3 * n] = prev; seg[3 * n + 1] = a; seg[3 * n + 2] = (size_t)invert; n++; }
        seg[3 * n] = a; seg[3 * n + 1] = b; seg[3 * n + 2] = (size_t)!invert; n++;
        prev = b;
    }
    if (prev < p->len) { seg[3 * n] = prev; seg[3 * n + 1] = p->len; seg[3 * n + 2] = (size_t)invert; n++; }
    tok_spans_free(&m);

    /* merge per behavior into (start, end, remove) */
    size_t k = 0;
    if (behavior == TB_ISOLATED || behavior == TB_REMOVED) {
        for (size_t i = 0; i < n; i++) if (behavior == TB_ISOLATED) seg[3 * i + 2] = 0;
        k = n;
    } else if (behavior == TB_CONTIGUOUS) {
        int prev_match = 0;
        for (size_t i = 0; i < n; i++) {
            int is_match = (int)seg[3 * i + 2];
            if (is_match == prev_match && k > 0) {
                seg[3 * (k - 1) + 1] = seg[3 * i + 1];
            } else {
                seg[3 * k] = seg[3 * i]; seg[3 * k + 1] = seg[3 * i + 1]; seg[3 * k + 2] = 0; k++;
            }
            prev_match = is_match;
        }
    } else if (behavior == TB_MERGED_PREV) {
        int prev_match = 0;
        for (size_t i = 0; i < n; i++) {
            int is_match = (int)seg[3 * i + 2];
            if (is_match && !prev_match && k > 0) {
                seg[3 * (k - 1) + 1] = seg[3 * i + 1];
            } else {
                seg[3 * k] = seg[3 * i]; seg[3 * k + 1] = seg[3 * i + 1]; seg[3 * k + 2] = 0; k++;
            }
            prev_match = is_match;
        }
    } else { /* TB_MERGED_NEXT: same fold from the right */
        int prev_match = 0;
        size_t w = n; /* write from the end */
        for (size_t ii = n; ii-- > 0;) {
            int is_match = (int)seg[3 * ii + 2];
            size_t a = seg[3 * ii], b = seg[3 * ii + 1];
            if (is_match && !prev_match && w < n) {
                seg[3 * w] = a;
            } else {
                w--;
                seg[3 * w] = a; seg[3 * w + 1] = b; seg[3 * w + 2] = 0;
            }
            prev_match = is_match;
        }
        memmove(seg, seg + 3 * w, (n - w) * 3 * sizeof *seg);
        k = n - w;
    }
    for (size_t i = 0; i < k && rc == ZS_OK; i++)
        if (!seg[3 * i + 2]) rc = pieces_add_slice(out, p, seg[3 * i], seg[3 * i + 1], -1);
    free(seg);
    if (rc) return zs_err_set(err, rc, "tokenizer: out of memory (Split)");
    return ZS_OK;
}

static int byte_map(tok_piece *p) {
    size_t nlen = 0;
    for (size_t i = 0; i < p->len; i++)
        nlen += tok_byte_to_cp((unsigned char)p->s[i]) < 0x80 ? 1 : 2;
    tok_pieces tmp = {0};
    tok_piece *np;
    int rc = pieces_add(&tmp, nlen, -1, &np);
    if (rc) return rc;
    size_t o = 0;
    for (size_t i = 0; i < p->len; i++) {
        char enc[4];
        size_t k = zs_utf8_encode(tok_byte_to_cp((unsigned char)p->s[i]), enc);
        for (size_t j = 0; j < k; j++) {
            np->s[o] = enc[j];
            np->orig[o++] = p->orig[i];
        }
    }
    free(p->orig);
    *p = *np;
    free(tmp.v);
    return ZS_OK;
}

static int pre_step(const tok_pre_step *st, tok_piece *p, tok_pieces *out, zs_err_t *err) {
    tok_pieces scratch = {0};
    int rc = ZS_OK;
    switch (st->kind) {
    case TP_SPLIT:
    case TP_DIGITS:
        return split_regex(p, st->re, st->behavior, st->invert, out, err);
    case TP_BYTELEVEL: {
        if (st->add_prefix_space && p->s[0] != ' ' && (rc = prepend(p, " ", 1, &scratch))) break;
        if (st->re == NULL) {
            rc = byte_map(p);
            if (rc == ZS_OK) rc = pieces_move(out, p);
            break;
        }
        size_t first = out->n;
        rc = split_regex(p, st->re, TB_ISOLATED, 0, out, err);
        if (rc) return rc;
        for (size_t i = first; i < out->n && rc == ZS_OK; i++) rc = byte_map(&out->v[i]);
        break;
    }
    case TP_METASPACE: {
        /* replace ' ' by the replacement */
        size_t spaces = 0;
        for (size_t i = 0; i < p->len; i++) spaces += p->s[i] == ' ';
        if (spaces) {
            tok_pieces tmp = {0};
            tok_piece *np;
            if ((rc = pieces_add(&tmp, p->len + spaces * (st->repl_len - 1), -1, &np))) break;
            size_t o = 0;
            for (size_t i = 0; i < p->len; i++) {
                if (p->s[i] == ' ') {
                    for (size_t j = 0; j < st->repl_len; j++) {
                        np->s[o] = st->repl[j];
                        np->orig[o++] = p->orig[i];
                    }
                } else {
                    np->s[o] = p->s[i];
                    np->orig[o++] = p->orig[i];
                }
            }
            free(p->orig);
            *p = *np;
            free(tmp.v);
        }
        int starts = p->len >= st->repl_len && memcmp(p->s, st->repl, st->repl_len) == 0;
        if (!starts && (st->prepend_scheme == TS_ALWAYS ||
                        (st->prepend_scheme == TS_FIRST && p->orig[0] == 0)))
            if ((rc = prepend(p, st->repl, st->repl_len, &scratch))) break;
        if (!st->split) {
            rc = pieces_move(out, p);
            break;
        }
        /* split on the replacement, MergedWithNext */
        size_t a = 0;
        for (size_t i = 1; i <= p->len && rc == ZS_OK; i++) {
            if (i == p->len || (i + st->repl_len <= p->len &&
                                memcmp(p->s + i, st->repl, st->repl_len) == 0)) {
                rc = pieces_add_slice(out, p, a, i, -1);
                a = i;
            }
        }
        break;
    }
    default:
        break;
    }
    free(scratch.v);
    if (rc) return zs_err_set(err, rc, "tokenizer: out of memory (pre-tokenizer)");
    return ZS_OK;
}

int tok_pretokenize(const zs_tok_t *tok, const char *text, size_t len, tok_pieces *out,
                    zs_err_t *err) {
    tok_pieces a = {0}, b = {0};
    tok_piece *p;
    int rc = pieces_add(&a, len, -1, &p);
    if (rc) return zs_err_set(err, rc, "tokenizer: out of memory for %zu bytes", len);
    if (p) {
        memcpy(p->s, text, len);
        for (size_t i = 0; i < len; i++) p->orig[i] = (uint32_t)i;
    }
    /* 1. non-normalized added tokens on the raw text */
    if (tok->match_raw.n && a.n) {
        rc = split_added(tok, &tok->match_raw, 0, &a.v[0], &b, err);
        if (rc) goto done;
        tok_pieces_free(&a);
        a = b;
        memset(&b, 0, sizeof b);
    }
    /* 2. normalize the rest, then split normalized added tokens */
    for (size_t i = 0; i < a.n; i++) {
        tok_piece *pc = &a.v[i];
        if (pc->added >= 0) {
            if ((rc = pieces_move(&b, pc))) goto oom;
            continue;
        }
        if ((rc = normalize_piece(tok, pc, err))) goto done;
        if (pc->len == 0) continue;
        if (tok->match_norm.n) {
            if ((rc = split_added(tok, &tok->match_norm, 1, pc, &b, err))) goto done;
        } else if ((rc = pieces_move(&b, pc))) {
            goto oom;
        }
    }
    tok_pieces_free(&a);
    a = b;
    memset(&b, 0, sizeof b);
    /* 3. pre-tokenizers */
    for (size_t s = 0; s < tok->n_pre; s++) {
        for (size_t i = 0; i < a.n; i++) {
            tok_piece *pc = &a.v[i];
            if (pc->added >= 0) {
                if ((rc = pieces_move(&b, pc))) goto oom;
                continue;
            }
            if ((rc = pre_step(&tok->pre[s], pc, &b, err))) goto done;
        }
        tok_pieces_free(&a);
        a = b;
        memset(&b, 0, sizeof b);
    }
    *out = a;
    memset(&a, 0, sizeof a);
    goto done;
oom:
    rc = zs_err_set(err, ZS_ENOMEM, "tokenizer: out of memory");
done:
    tok_pieces_free(&a);
    tok_pieces_free(&b);
    return rc;
}
