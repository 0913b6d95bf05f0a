/*
 * testhook.h — test-only fault injection: kill the process or poison a number at a
 * named point, so that tests can show what a crash or a NaN leaves behind.
 *
 * Driven by two environment variables, read once on the first call:
 *   LORAC_TEST_KILL_AT=LABEL:N   raise SIGKILL the N-th time the program passes the
 *                                kill point LABEL (N counts from 1)
 *   LORAC_TEST_NAN_AT=LABEL:N    lc_test_nan_point(LABEL) returns true the N-th time
 * Kill points: atomic-write (after a write to a temporary file), atomic-rename (a
 * temporary file complete and fsynced, not yet renamed), atomic-done (just renamed),
 * step (an optimizer update done, before any save of that step). NaN points: loss (a
 * micro-batch's loss), grad (a step's gradients).
 * These are testing hooks, not features: with the variables unset (always, outside the
 * tests) a point costs one comparison. This module never prints.
 */
#ifndef LC_TESTHOOK_H
#define LC_TESTHOOK_H

#include <stdbool.h>

/* Raises SIGKILL when LORAC_TEST_KILL_AT names this label and its count is reached. */
void lc_test_kill_point(const char *label);
/* True when LORAC_TEST_NAN_AT names this label and its count is reached (once). */
bool lc_test_nan_point(const char *label);

#endif
