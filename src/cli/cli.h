/* Shared pieces of the `zerostart` command: subcommand entry points and small helpers. */
#ifndef ZS_CLI_H
#define ZS_CLI_H

#include <stdint.h>

#include "zerostart/load.h"
#include "zerostart/tp.h"

int zs_cmd_load(int argc, char **argv);
int zs_cmd_synth(int argc, char **argv);
int zs_cmd_demo(int argc, char **argv);
int zs_cmd_probe(int argc, char **argv);
int zs_cmd_serve(int argc, char **argv);
int zs_cmd_run(int argc, char **argv);
int zs_cmd_pool(int argc, char **argv);
/* `zerostart load --tp N` (cmd_load_tp.c): o->kind and o->ranks set; dev->index is the first
 * GPU. Returns the exit status. */
int zs_cli_load_tp(const char *path, const zs_device_t *dev, zs_tp_load_opts_t *o, int verify, int json,
                   double t_exec_start);
/* "hit", "filled from storage", ... for a zs_pool_source_t. */
const char *zs_cli_pool_source_name(int how);

/* Parses a size like "4M", "1GiB", "4096" into bytes; 0 on success. */
int zs_cli_parse_size(const char *s, uint64_t *out);
/* Parses a non-negative int; 0 on success. */
int zs_cli_parse_int(const char *s, long lo, long hi, long *out);
/* "16.06 GB" style formatting into buf. */
const char *zs_cli_fmt_bytes(uint64_t b, char *buf, unsigned len);

#endif
