/* zerostart chat templates: loads the `chat_template` of a Hugging Face tokenizer_config.json
 * and renders a conversation with it, byte-identical to transformers' apply_chat_template
 * (jinja2 sandbox, trim_blocks + lstrip_blocks, loopcontrols, raise_exception, strftime_now,
 * transformers' tojson). The interpreter implements the Jinja subset that the chat templates
 * of the supported model families use; anything else is refused with ZS_EUNSUPPORTED and the
 * template line/column, never rendered approximately. See docs/chat_templates.md. */
#ifndef ZEROSTART_CHAT_TEMPLATE_H
#define ZEROSTART_CHAT_TEMPLATE_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "zerostart/err.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct zs_chat_template zs_chat_template_t;

/* Bounds for one render; a zero field takes the default. A render that exceeds one fails
 * with ZS_ERANGE instead of growing or running without bound. */
typedef struct zs_chat_template_limits {
    size_t max_output_bytes;  /* rendered text and any single string; default 8 MiB */
    size_t max_memory_bytes;  /* all values created during one render; default 256 MiB */
    uint64_t max_steps;       /* evaluation steps (nodes, loop iterations); default 20M */
} zs_chat_template_limits_t;

/* Loads the template from a tokenizer_config.json file. `name` picks one of a list-form
 * `chat_template` ([{name, template}]); NULL means "default" (or the only string form).
 * When the config has no chat_template, a `chat_template.jinja` next to it is used, as
 * transformers does. bos/eos/unk/pad/sep/cls/mask tokens (strings or {"content": ...}
 * objects) become template variables. */
int zs_chat_template_load_file(const char *tokenizer_config_path, const char *name,
                               zs_chat_template_t **out, zs_err_t *err);
/* Same from the JSON text of a tokenizer_config.json. */
int zs_chat_template_load_json(const char *config_json, size_t len, const char *name,
                               zs_chat_template_t **out, zs_err_t *err);
/* A template from its Jinja source; bos_token/eos_token may be NULL (then undefined). */
int zs_chat_template_from_source(const char *source, size_t len, const char *bos_token,
                                 const char *eos_token, zs_chat_template_t **out,
                                 zs_err_t *err);
void zs_chat_template_free(zs_chat_template_t *t);

/* Replaces the render limits (NULL restores the defaults). Not thread-safe against a
 * concurrent render of the same template; renders themselves may run concurrently. */
void zs_chat_template_set_limits(zs_chat_template_t *t, const zs_chat_template_limits_t *lim);

/* Renders `messages` (a JSON array of {role, content, ...}; content a string or a list of
 * parts). `extra_vars` (a JSON object or NULL) adds or overrides template variables, e.g.
 * tools, documents, date_string, enable_thinking. `tools` and `documents` default to null
 * as in transformers. On success *out is a malloc'd NUL-terminated string (free() it) and
 * *out_len (if not NULL) its length. Errors: ZS_EINVAL for the template's own
 * raise_exception (message carries its text) and for errors jinja2 would raise at render
 * time (undefined values used, type errors), ZS_EFORMAT for syntax errors, ZS_EUNSUPPORTED
 * for constructs this interpreter does not implement, ZS_ERANGE for exceeded limits. */
int zs_chat_template_render(const zs_chat_template_t *t, const json_t *messages,
                            int add_generation_prompt, const json_t *extra_vars, char **out,
                            size_t *out_len, zs_err_t *err);
/* Same with messages / extra_vars as JSON text (extra_vars_json may be NULL). */
int zs_chat_template_render_json(const zs_chat_template_t *t, const char *messages_json,
                                 int add_generation_prompt, const char *extra_vars_json,
                                 char **out, size_t *out_len, zs_err_t *err);

/* The template source (newlines as in the config) and the special tokens; NULL if absent. */
const char *zs_chat_template_source(const zs_chat_template_t *t);
const char *zs_chat_template_bos_token(const zs_chat_template_t *t);
const char *zs_chat_template_eos_token(const zs_chat_template_t *t);

#ifdef __cplusplus
}
#endif
#endif
