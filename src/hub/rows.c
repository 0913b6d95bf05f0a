/*
 * rows.c — the rows of a Hub data set through the datasets server (see hub.h), for data
 * sets published only as Parquet, which lorac does not parse.
 *
 * API: GET {server}/splits?dataset=REPO answers {"splits": [{"dataset", "config",
 * "split"}], "pending", "failed"}; GET {server}/rows?dataset=REPO&config=C&split=S
 * &offset=O&length=N (N at most 100) answers {"features", "rows": [{"row_idx", "row":
 * {...}, "truncated_cells": [...]}], "num_rows_total", "num_rows_per_page", "partial"};
 * errors are {"error": "..."} with a 4xx/5xx status. Owns: the choice of config and
 * split, the pagination and its checks, the JSONL file in the cache (lorac-rows/ beside
 * huggingface_hub's folders of the data set, which its cache scan ignores).
 * Must not: print (beyond the progress bar and one lc_warn), exit, or log the token.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "core/error.h"
#include "core/file.h"
#include "core/json.h"
#include "core/log.h"
#include "core/mem.h"
#include "core/vec.h"
#include "hub/cache.h"
#include "hub/http.h"
#include "hub/hub.h"

enum { PAGE = 100 }; // the most rows the server gives per request

/* A name from the server that may become a folder name. */
static bool safe_name(const char *s) { return s && *s && lc_hub_safe_path(s) && !strchr(s, '/'); }

/* GETs url and parses its JSON into *out; retries twice on 429 and 5xx (the server is
 * sometimes busy). Errors name the URL and carry the server's own "error" text. */
static int get_json(const char *url, const char *repo, cJSON **out) {
    *out = NULL;
    lc_buf body = {0};
    long status = 0;
    int rc = -1;
    for (int attempt = 0;; attempt++) {
        lc_buf_clear(&body);
        lc_hub_sink s = {.mem = &body};
        if (lc_hub_http_get(url, repo, &s, 0, &status) != 0) {
            lc_fail_prefix("cannot reach the datasets server (no network? set HF_DATASETS_SERVER for another one)");
            goto done;
        }
        if ((status == 429 || status >= 500) && attempt < 2) {
            struct timespec ts = {0, 400000000L * (attempt + 1)};
            nanosleep(&ts, NULL);
            continue;
        }
        break;
    }
    if (status == 200) {
        lc_buf what = {0};
        lc_buf_printf(&what, "%s (the datasets server's answer for %s)", url, repo);
        rc = lc_json_parse(body.data ? body.data : "", body.len, what.data, out);
        lc_buf_free(&what);
        goto done;
    }
    if (status == 401 || status == 403) {
        lc_hub_status_fail(repo, url, status, true);
        goto done;
    }
    char reason[300] = "";
    cJSON *j = body.len ? cJSON_ParseWithLength(body.data, body.len) : NULL;
    const cJSON *err = cJSON_GetObjectItemCaseSensitive(j, "error");
    if (cJSON_IsString(err)) {
        snprintf(reason, sizeof reason, " (\"%.280s\")", err->valuestring);
        for (char *p = reason; *p; p++)
            if (*p == '\n' || *p == '\r') *p = ' ';
    }
    cJSON_Delete(j);
    if (status == 404)
        lc_fail("%s: %s answered 404 Not Found%s; the datasets server has no rows for it (check the id, "
                "--dataset-config, --dataset-split), or pass one of its data files with --dataset-file",
                repo, url, reason);
    else
        lc_fail("%s: %s answered HTTP %ld%s; try again later, or pass one of its data files with --dataset-file",
                repo, url, status, reason);
done:
    lc_buf_free(&body);
    return rc;
}

/* Picks the config and split from a /splits answer. *config and *split are new. */
static int choose_split(const char *repo, const cJSON *j, const lc_hub_rows_options *o, char **config, char **split) {
    *config = *split = NULL;
    const cJSON *arr = cJSON_GetObjectItemCaseSensitive(j, "splits"), *it;
    if (!cJSON_IsArray(arr)) return lc_fail("%s: the datasets server's /splits answer has no \"splits\" array", repo);
    lc_buf configs = {0}, splits = {0};
    const char *only_config = NULL;
    bool many_configs = false, has_default = false;
    cJSON_ArrayForEach(it, arr) {
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(it, "config");
        if (!cJSON_IsString(c)) continue;
        if (!strcmp(c->valuestring, "default")) has_default = true;
        if (!only_config) only_config = c->valuestring;
        else if (strcmp(only_config, c->valuestring)) many_configs = true;
        if (!strstr(configs.data ? configs.data : "", c->valuestring)) {
            if (configs.len) lc_buf_puts(&configs, ", ");
            lc_buf_puts(&configs, c->valuestring);
        }
    }
    int rc = -1;
    const char *want_config = o->config ? o->config : !many_configs ? only_config : has_default ? "default" : NULL;
    if (!only_config) {
        lc_fail("%s: the datasets server lists no split for it (yet: a new data set takes a while); pass one of "
                "its data files with --dataset-file",
                repo);
        goto done;
    }
    if (!want_config) {
        lc_fail("%s: the data set has the configs %s: pick one with --dataset-config", repo, configs.data);
        goto done;
    }
    const char *only_split = NULL, *found = NULL;
    bool many_splits = false, config_seen = false;
    cJSON_ArrayForEach(it, arr) {
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(it, "config");
        const cJSON *s = cJSON_GetObjectItemCaseSensitive(it, "split");
        if (!cJSON_IsString(c) || !cJSON_IsString(s) || strcmp(c->valuestring, want_config)) continue;
        config_seen = true;
        if (splits.len) lc_buf_puts(&splits, ", ");
        lc_buf_puts(&splits, s->valuestring);
        if (!only_split) only_split = s->valuestring;
        else many_splits = true;
        if (!strcmp(s->valuestring, o->split ? o->split : "train")) found = s->valuestring;
    }
    if (!config_seen) {
        lc_fail("%s: the data set has no config '%s' (it has %s)", repo, want_config, configs.data);
        goto done;
    }
    if (!found && !o->split && !many_splits) found = only_split;
    if (!found) {
        lc_fail("%s: config '%s' has no split '%s' (it has %s): pick one with --dataset-split", repo, want_config,
                o->split ? o->split : "train", splits.data);
        goto done;
    }
    if (!safe_name(want_config) || !safe_name(found)) {
        lc_fail("%s: the config '%s' or split '%s' cannot be a folder name", repo, want_config, found);
        goto done;
    }
    *config = xstrdup(want_config);
    *split = xstrdup(found);
    rc = 0;
done:
    lc_buf_free(&configs);
    lc_buf_free(&splits);
    return rc;
}

/* Fetches every row of config/split into the atomic file a. */
static int fetch_rows(const char *server, const char *repo, const char *config, const char *split,
                      const lc_hub_rows_options *o, lc_atomic *a) {
    int64_t offset = 0, total = -1;
    lc_progress bar;
    lc_buf label = {0}, url = {0};
    lc_buf_printf(&label, "%s rows", split);
    int rc = -1;
    bool warned = false;
    while (total < 0 || offset < total) {
        lc_buf_clear(&url);
        lc_buf_printf(&url, "%s/rows?dataset=", server);
        lc_hub_url_escape(&url, repo, true);
        lc_buf_puts(&url, "&config=");
        lc_hub_url_escape(&url, config, true);
        lc_buf_puts(&url, "&split=");
        lc_hub_url_escape(&url, split, true);
        lc_buf_printf(&url, "&offset=%lld&length=%d", (long long)offset, PAGE);
        cJSON *j = NULL;
        if (get_json(url.data, repo, &j) != 0) goto fail;
        const cJSON *tot = cJSON_GetObjectItemCaseSensitive(j, "num_rows_total");
        const cJSON *rows = cJSON_GetObjectItemCaseSensitive(j, "rows");
        if (!cJSON_IsNumber(tot) || tot->valuedouble < 0 || !cJSON_IsArray(rows)) {
            lc_fail("%s: %s: the answer lacks \"num_rows_total\" or \"rows\"", repo, url.data);
            cJSON_Delete(j);
            goto fail;
        }
        if (total < 0) {
            total = (int64_t)tot->valuedouble;
            lc_progress_start(&bar, label.data, total);
            const cJSON *partial = cJSON_GetObjectItemCaseSensitive(j, "partial");
            if (cJSON_IsTrue(partial) && !warned) {
                lc_warn("%s: the datasets server has only part of split '%s' (%lld rows: the data set is too big for "
                        "it); the rows written are those",
                        repo, split, (long long)total);
                warned = true;
            }
        } else if ((int64_t)tot->valuedouble != total) {
            lc_fail("%s: the split '%s' changed during the download (%lld rows, now %lld); run again", repo, split,
                    (long long)total, (long long)tot->valuedouble);
            cJSON_Delete(j);
            goto fail;
        }
        int64_t expect = total - offset < PAGE ? total - offset : PAGE;
        if (cJSON_GetArraySize(rows) == 0 && expect > 0) {
            lc_fail("%s: %s gave no rows, but the split has %lld and %lld were read; run again", repo, url.data,
                    (long long)total, (long long)offset);
            cJSON_Delete(j);
            goto fail;
        }
        const cJSON *it;
        cJSON_ArrayForEach(it, rows) {
            const cJSON *idx = cJSON_GetObjectItemCaseSensitive(it, "row_idx");
            const cJSON *row = cJSON_GetObjectItemCaseSensitive(it, "row");
            const cJSON *cut = cJSON_GetObjectItemCaseSensitive(it, "truncated_cells");
            if (!cJSON_IsNumber(idx) || (int64_t)idx->valuedouble != offset || !cJSON_IsObject(row)) {
                lc_fail("%s: %s: expected row %lld, got %s; run again", repo, url.data, (long long)offset,
                        cJSON_IsNumber(idx) ? "another row" : "an entry without row_idx and row");
                cJSON_Delete(j);
                goto fail;
            }
            if (cJSON_GetArraySize(cut) > 0) {
                const cJSON *c0 = cJSON_GetArrayItem(cut, 0);
                lc_fail("%s: the datasets server truncated cell '%s' of row %lld (too big for it); pass one of the "
                        "data set's files with --dataset-file instead",
                        repo, cJSON_IsString(c0) ? c0->valuestring : "?", (long long)offset);
                cJSON_Delete(j);
                goto fail;
            }
            char *line = cJSON_PrintUnformatted(row);
            int w = lc_atomic_write(a, line, strlen(line));
            if (w == 0) w = lc_atomic_write(a, "\n", 1);
            free(line);
            if (w != 0) {
                cJSON_Delete(j);
                goto fail;
            }
            offset++;
            if (offset > total) break;
        }
        cJSON_Delete(j);
        if (offset > total) {
            lc_fail("%s: %s gave more rows than the %lld it announced; run again", repo, url.data, (long long)total);
            goto fail;
        }
        if (!o->quiet) lc_progress_update(&bar, offset);
    }
    rc = 0;
fail:
    if (total >= 0 && !o->quiet) lc_progress_finish(&bar);
    lc_buf_free(&label);
    lc_buf_free(&url);
    return rc;
}

int lc_hub_dataset_rows(const char *repo, const char *commit, const lc_hub_rows_options *o, char **path) {
    *path = NULL;
    if (!safe_name(commit)) return lc_fail("%s: '%s' is not a revision folder name", repo, commit ? commit : "");
    if ((o->config && !safe_name(o->config)) || (o->split && !safe_name(o->split)))
        return lc_fail("--dataset-config/--dataset-split: '%s' is not a config or split name",
                       o->config && !safe_name(o->config) ? o->config : o->split);
    char *folder = lc_hub_repo_folder(repo, true), *server = lc_hub_datasets_server();
    char *config = NULL, *split = NULL;
    cJSON *splits = NULL;
    lc_buf base = {0}, splits_file = {0}, url = {0}, out = {0};
    int rc = -1;
    lc_buf_printf(&base, "%s/lorac-rows/%s", folder, commit);
    lc_buf_printf(&splits_file, "%s/splits.json", base.data);
    /* the list of splits: cached beside the rows, so that the choice works offline */
    if (lc_is_file(splits_file.data)) {
        if (lc_json_parse_file(splits_file.data, (size_t)16 << 20, &splits) != 0) goto done;
    } else if (lc_hub_offline()) {
        lc_fail("%s: its rows are not in the cache (%s) and HF_HUB_OFFLINE is set; run with network first", repo,
                base.data);
        goto done;
    } else {
        lc_buf_printf(&url, "%s/splits?dataset=", server);
        lc_hub_url_escape(&url, repo, true);
        if (get_json(url.data, repo, &splits) != 0) goto done;
        char *text = cJSON_PrintUnformatted(splits);
        int w = lc_hub_mkdirs_for(splits_file.data) == 0 ? lc_write_file_atomic(splits_file.data, text, strlen(text))
                                                          : -1;
        free(text);
        if (w != 0) goto done;
    }
    if (choose_split(repo, splits, o, &config, &split) != 0) goto done;
    lc_buf_printf(&out, "%s/%s/%s.jsonl", base.data, config, split);
    if (!lc_is_file(out.data)) {
        if (lc_hub_offline()) {
            lc_fail("%s: split '%s' of config '%s' is not in the cache (%s) and HF_HUB_OFFLINE is set", repo, split,
                    config, out.data);
            goto done;
        }
        lc_atomic a;
        if (lc_hub_mkdirs_for(out.data) != 0 || lc_atomic_open(&a, out.data) != 0) goto done;
        if (fetch_rows(server, repo, config, split, o, &a) != 0) {
            lc_atomic_abort(&a);
            goto done;
        }
        if (lc_atomic_commit(&a) != 0) goto done;
    }
    *path = xstrdup(out.data);
    rc = 0;
done:
    cJSON_Delete(splits);
    free(config);
    free(split);
    free(folder);
    free(server);
    lc_buf_free(&base);
    lc_buf_free(&splits_file);
    lc_buf_free(&url);
    lc_buf_free(&out);
    return rc;
}
