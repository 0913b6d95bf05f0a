/*
 * http.h — the HTTP side of src/hub, shared by the Hub downloads (hub.c) and the
 * datasets-server rows (rows.c): endpoints, the token, one GET into memory or a file,
 * one HEAD that reads the Hub's file metadata headers, and the one-line explanations of
 * HTTP error statuses. Internal to src/hub (the commands use hub.h).
 *
 * Must not: print (beyond the progress bar), exit, or let the token reach a message.
 */
#ifndef LC_HUB_HTTP_H
#define LC_HUB_HTTP_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "core/log.h"
#include "core/vec.h"

/* $HF_ENDPOINT (default https://huggingface.co), no trailing '/'; new string. */
char *lc_hub_endpoint(void);
/* $HF_DATASETS_SERVER (default https://datasets-server.huggingface.co), no trailing '/';
 * new string. */
char *lc_hub_datasets_server(void);
/* HF_HUB_OFFLINE is set to something other than "" or "0". */
bool lc_hub_offline(void);

/* Where a GET's body goes. */
typedef struct {
    lc_buf *mem;      // kept in memory (capped at 64 MiB), or
    FILE *f;          // written to a file (only the body of a 2xx answer)
    lc_progress *bar; // may be NULL
    int64_t offset;   // bytes already on disk before this request (a resume)
    int64_t written;  // bytes written to f by this request
    int write_errno;  // the errno of a failed write to f, 0 when none failed
    void *curl;       // internal
} lc_hub_sink;

/* One GET of url into s; range_from > 0 asks for the bytes from there on. *status is the
 * final HTTP status after redirects. Returns 0 when the transfer completed (any status);
 * -1 with a message naming `what` and the URL (network failure) or the file (write
 * failure: s->write_errno is set) otherwise. */
int lc_hub_http_get(const char *url, const char *what, lc_hub_sink *s, int64_t range_from, long *status);

/* What a HEAD of a Hub file URL tells (huggingface_hub's get_hf_file_metadata). */
typedef struct {
    long status;
    char commit[72]; // X-Repo-Commit, "" when absent
    char etag[136];  // X-Linked-Etag, else ETag, normalised (W/ prefix and quotes gone); ""
    int64_t size;    // X-Linked-Size, else Content-Length; -1 when absent
} lc_hub_meta;

/* HEADs url without following redirects to other hosts (a relative redirect, as for a
 * renamed repository, is followed) and fills *m. Returns 0 when an answer came (any
 * status), -1 with a message naming what and url otherwise. */
int lc_hub_http_head(const char *url, const char *what, lc_hub_meta *m);

/* The etag as a file name: a leading W/ and the surrounding quotes removed, in place. */
void lc_hub_normalize_etag(char *etag);

/* Records the one-line explanation of an HTTP error status for repo (401: set a token;
 * 403: accept the licence at the repo's page; 404: check the id). Returns -1. */
int lc_hub_status_fail(const char *repo, const char *url, long status, bool dataset);

/* Appends s to b with every byte outside [A-Za-z0-9._~-] percent-encoded ('/' too when
 * slash is true). */
void lc_hub_url_escape(lc_buf *b, const char *s, bool slash);

#endif
