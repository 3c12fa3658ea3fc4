/* libFuzzer target for the chat-template interpreter: the input is template source; it is
 * parsed and, when it parses, rendered against a fixed conversation (tools, tool calls,
 * content parts, unicode) under small render limits. Must never crash, leak or hang. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "zerostart/chat_template.h"

static const char MESSAGES[] =
    "[{\"role\":\"system\",\"content\":\"Be brief.\"},"
    "{\"role\":\"user\",\"content\":\"h\\u00e9llo \\u4e16\\u754c <think>x</think>\"},"
    "{\"role\":\"assistant\",\"content\":\"\",\"tool_calls\":[{\"id\":\"abcdefghi\",\"type\":\"function\","
    "\"function\":{\"name\":\"f\",\"arguments\":{\"a\":1,\"b\":[true,null,2.5]}}}]},"
    "{\"role\":\"tool\",\"tool_call_id\":\"abcdefghi\",\"content\":\"ok\"},"
    "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"part\"}]}]";
static const char EXTRA[] =
    "{\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\",\"parameters\":{\"type\":\"object\"}}}],"
    "\"date_string\":\"26 Jul 2024\",\"enable_thinking\":false}";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    zs_chat_template_t *t = NULL;
    zs_err_t err = {0};
    if (zs_chat_template_from_source((const char *)data, size, "<s>", "</s>", &t, &err) != 0) return 0;
    zs_chat_template_limits_t lim = {.max_output_bytes = 1 << 20, .max_memory_bytes = 32 << 20,
                                     .max_steps = 200000};
    zs_chat_template_set_limits(t, &lim);
    char *out = NULL;
    size_t len = 0;
    zs_err_clear(&err);
    if (zs_chat_template_render_json(t, MESSAGES, (int)(size & 1), (size & 2) ? EXTRA : NULL, &out, &len, &err) == 0) {
        if (out == NULL || out[len] != '\0') abort();
    } else if (out != NULL || err.code == 0) {
        abort();
    }
    free(out);
    zs_chat_template_free(t);
    return 0;
}
