/* Tokenizer files for synthetic checkpoints: a byte-level BPE tokenizer.json shaped like
 * Llama 3's (256 byte tokens; merges that build a fixed list of common English words, then
 * generated letter strings, filling the vocabulary; special and reserved tokens at the top,
 * 256 of them for a 128256-token vocabulary), a tokenizer_config.json with a
 * Llama-3-style chat template, and generation_config.json. The weights are random, so the
 * text a synthetic model writes is noise; the files exist so that every path of a real
 * model (tokenizing, templates, streaming detokenization) runs on it. */
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "common/utf8.h"
#include "zerostart/synth.h"

int zs_synth_write_tokenizer(const char *dir, int vocab, int *bos, int *eos, int *eot, zs_err_t *err);

static const char *const synth_words[] = {
    " the", " of", " and", " to", " in", " is", " that", " for", " it", " as", " with", " was",
    " on", " be", " at", " by", " this", " are", " from", " or", " have", " an", " they", " which",
    " one", " you", " were", " all", " we", " can", " her", " has", " there", " been", " if",
    " more", " when", " will", " would", " who", " so", " no", " model", " start", " fast",
    " token", " server", " weights", " zero", "ing", "ed", "er", "ly", "tion", "The", " I",
    "\n\n", " Hello", " world", ".", ",",
};

static const char *const synth_specials[] = {
    "<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>",
};

/* GPT-2 byte-to-unicode: printable bytes map to themselves, the rest to U+0100 + n. */
static void byte_to_utf8(unsigned b, char out[4]) {
    static unsigned map[256];
    static int ready;
    if (!ready) {
        unsigned n = 0;
        for (unsigned c = 0; c < 256; c++) {
            int printable = (c >= 33 && c <= 126) || (c >= 161 && c <= 172) || (c >= 174);
            map[c] = printable ? c : 256 + n++;
        }
        ready = 1;
    }
    out[zs_utf8_encode(map[b], out)] = 0; /* at most 2 bytes: code points < 0x144 */
}

/* Maps raw text to its byte-level token string. */
static void bytes_to_token(const char *s, size_t n, char *out, size_t cap) {
    size_t o = 0;
    for (size_t i = 0; i < n && o + 3 < cap; i++) {
        char u[4];
        byte_to_utf8((unsigned char)s[i], u);
        for (char *p = u; *p; p++) out[o++] = *p;
    }
    out[o] = 0;
}

/* Adds the merge building text[0..k) from text[0..k-1) and text[k-1] when the result is new
 * and its left part is a token. Returns nonzero on allocation failure. */
static int synth_merge(json_t *v, json_t *merges, const char *text, size_t k, int *next) {
    char left[64], right[16], whole[64], merge[96];
    bytes_to_token(text, k - 1, left, sizeof left);
    bytes_to_token(text + k - 1, 1, right, sizeof right);
    bytes_to_token(text, k, whole, sizeof whole);
    if (json_object_get(v, whole) != NULL || json_object_get(v, left) == NULL) return 0;
    snprintf(merge, sizeof merge, "%s %s", left, right);
    if (json_array_append_new(merges, json_string(merge)) != 0 || json_object_set_new(v, whole, json_integer(*next)) != 0)
        return 1;
    (*next)++;
    return 0;
}

static json_t *synth_tokenizer_json(int vocab, int *bos, int *eos, int *eot) {
    json_t *v = json_object(), *merges = json_array(), *added = json_array();
    int next = 0, bad = v == NULL || merges == NULL || added == NULL;
    for (unsigned b = 0; b < 256 && !bad; b++) {
        char u[4];
        byte_to_utf8(b, u);
        bad = json_object_set_new(v, u, json_integer(next++)) != 0;
    }
    /* Specials take the top of the vocabulary, as in Llama 3 (256 of 128256); merges fill the
     * rest: first the fixed word list, then generated letter strings (with and without a
     * leading space), each one merge of an existing token and one more letter. */
    int nspecial = vocab / 16 < 256 ? (vocab / 16 > 5 ? vocab / 16 : 5) : 256;
    int merge_limit = vocab - nspecial;
    for (size_t w = 0; w < sizeof synth_words / sizeof *synth_words && !bad; w++) {
        const char *word = synth_words[w];
        size_t n = strlen(word);
        for (size_t k = 2; k <= n && !bad && next < merge_limit; k++)
            bad = synth_merge(v, merges, word, k, &next);
    }
    static const char letters[] = "etaoinshrdlcumwfgypbvkjxqz";
    for (int len = 2; len <= 6 && next < merge_limit && !bad; len++) {
        for (int space = 1; space >= 0 && next < merge_limit && !bad; space--) {
            int nl = len - space, idx[8] = {0};
            for (;;) { /* every string of nl letters, after a space when `space` */
                char gen[16];
                size_t g = 0;
                if (space) gen[g++] = ' ';
                for (int i = 0; i < nl; i++) gen[g++] = letters[idx[i]];
                bad = synth_merge(v, merges, gen, g, &next);
                if (next >= merge_limit || bad) break;
                int i = nl - 1;
                while (i >= 0 && ++idx[i] == 26) idx[i--] = 0;
                if (i < 0) break;
            }
        }
    }
    int first_special = next;
    for (int id = next; id < vocab && !bad; id++) {
        char name[64];
        int k = id - first_special;
        if (k < (int)(sizeof synth_specials / sizeof *synth_specials))
            snprintf(name, sizeof name, "%s", synth_specials[k]);
        else
            snprintf(name, sizeof name, "<|reserved_special_token_%d|>", k);
        bad = json_array_append_new(added, json_pack("{s:i,s:s,s:b,s:b,s:b,s:b,s:b}", "id", id, "content", name,
                                                     "single_word", 0, "lstrip", 0, "rstrip", 0, "normalized", 0,
                                                     "special", 1)) != 0 ||
              json_object_set_new(v, name, json_integer(id)) != 0;
    }
    *bos = first_special;
    *eos = first_special + 1;
    *eot = first_special + 4;
    if (bad) {
        json_decref(v);
        json_decref(merges);
        json_decref(added);
        return NULL;
    }
    const char *bos_name = synth_specials[0];
    json_t *single = json_pack("[{s:{s:s,s:i}},{s:{s:s,s:i}}]", "SpecialToken", "id", bos_name, "type_id", 0,
                               "Sequence", "id", "A", "type_id", 0);
    json_t *pair = json_pack("[{s:{s:s,s:i}},{s:{s:s,s:i}},{s:{s:s,s:i}},{s:{s:s,s:i}}]", "SpecialToken", "id",
                             bos_name, "type_id", 0, "Sequence", "id", "A", "type_id", 0, "SpecialToken", "id",
                             bos_name, "type_id", 1, "Sequence", "id", "B", "type_id", 1);
    json_t *specials = json_pack("{s:{s:s,s:[i],s:[s]}}", bos_name, "id", bos_name, "ids", first_special,
                                 "tokens", bos_name);
    json_t *post = json_pack("{s:s,s:o,s:o,s:o}", "type", "TemplateProcessing", "single", single, "pair", pair,
                             "special_tokens", specials);
    json_t *pre = json_pack("{s:s,s:b,s:b,s:b}", "type", "ByteLevel", "add_prefix_space", 0, "trim_offsets", 1,
                            "use_regex", 1);
    json_t *dec = json_pack("{s:s,s:b,s:b,s:b}", "type", "ByteLevel", "add_prefix_space", 1, "trim_offsets", 1,
                            "use_regex", 1);
    json_t *model = json_pack("{s:s,s:n,s:n,s:n,s:n,s:b,s:b,s:b,s:o,s:o}", "type", "BPE", "dropout", "unk_token",
                              "continuing_subword_prefix", "end_of_word_suffix", "fuse_unk", 0, "byte_fallback", 0,
                              "ignore_merges", 0, "vocab", v, "merges", merges);
    /* json_pack steals "o" references even when it fails, so nothing leaks on error. */
    json_t *root = json_pack("{s:s,s:n,s:n,s:o,s:n,s:o*,s:o*,s:o*,s:o*}", "version", "1.0", "truncation",
                             "padding", "added_tokens", added, "normalizer", "pre_tokenizer", pre,
                             "post_processor", post, "decoder", dec, "model", model);
    return root;
}

static const char synth_chat_template[] =
    "{{- bos_token }}\n"
    "{%- for message in messages %}\n"
    "    {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}\n"
    "{%- endfor %}\n"
    "{%- if add_generation_prompt %}\n"
    "    {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}\n"
    "{%- endif %}\n";

static int synth_dump(const char *dir, const char *name, json_t *j, zs_err_t *err) {
    char path[4096];
    if (j == NULL) return zs_err_set(err, ZS_ENOMEM, "%s/%s: out of memory", dir, name);
    snprintf(path, sizeof path, "%s/%s", dir, name);
    int rc = json_dump_file(j, path, JSON_INDENT(1)) == 0 ? ZS_OK
                                                         : zs_err_set(err, ZS_EIO, "write %s failed", path);
    json_decref(j);
    return rc;
}

int zs_synth_write_tokenizer(const char *dir, int vocab, int *bos, int *eos, int *eot, zs_err_t *err) {
    json_t *tok = synth_tokenizer_json(vocab, bos, eos, eot);
    if (tok == NULL) return zs_err_set(err, ZS_ENOMEM, "building the synthetic tokenizer failed");
    if (*eot >= vocab)
        return json_decref(tok), zs_err_set(err, ZS_EINVAL, "vocabulary %d too small for the synthetic tokenizer", vocab);
    int rc = synth_dump(dir, "tokenizer.json", tok, err);
    if (rc == ZS_OK)
        rc = synth_dump(dir, "tokenizer_config.json",
                        json_pack("{s:s,s:s,s:s,s:s,s:i}", "bos_token", "<|begin_of_text|>", "eos_token", "<|eot_id|>",
                                  "chat_template", synth_chat_template, "tokenizer_class", "PreTrainedTokenizerFast",
                                  "model_max_length", 8192),
                        err);
    if (rc == ZS_OK)
        rc = synth_dump(dir, "generation_config.json",
                        json_pack("{s:i,s:[i,i],s:b}", "bos_token_id", *bos, "eos_token_id", *eos, *eot,
                                  "do_sample", 0),
                        err);
    return rc;
}
