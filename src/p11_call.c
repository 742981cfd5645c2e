/* SPDX-License-Identifier: BSD-3-Clause */
#include "config.h"

#include "p11_call.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

/* How often the watcher looks at the call in progress: a call is ended between
 * call_timeout and call_timeout + TICK_MS after it began. */
#define TICK_MS 250

_Static_assert(ATOMIC_POINTER_LOCK_FREE == 2 && ATOMIC_LONG_LOCK_FREE == 2 && ATOMIC_INT_LOCK_FREE == 2,
	       "the watcher and the calls share state without a lock");

/* What the watcher claims a call with, as its deadline ends the process. */
static const char expiring[] = "";

static bool guarded;
static unsigned timeout;
static sigset_t stop_signals;
static char expiry_tail[96]; /* the log line after the function's name */
/* Shared with the watcher: the function being called (NULL between calls), how
 * many calls began, and a stop signal that came (0: none). */
static _Atomic(const char *) current;
static _Atomic(const struct p11_call_owner *) current_owner;
static _Atomic(const struct p11_call_owner *) witness;
static atomic_ulong calls;
static atomic_int stop_signal;

/* Ends the process by sig's default action, from any thread. */
static _Noreturn void end_with(int sig)
{
	struct sigaction dfl = { .sa_handler = SIG_DFL };
	sigset_t set;

	sigemptyset(&set);
	sigaddset(&set, sig);
	sigaction(sig, &dfl, NULL);
	pthread_sigmask(SIG_UNBLOCK, &set, NULL);
	raise(sig);
	_exit(128 + sig);
}

/* Async-signal-safe (the module may hold any lock): plain copying, no formatting. */
static size_t append(char *out, size_t off, size_t size, const char *s)
{
	while (*s && off < size - 1)
		out[off++] = *s++;
	return off;
}

static _Noreturn void expire(const char *function)
{
	const struct p11_call_owner *owner = current_owner;
	char message[160];
	size_t n;

	if (owner)
		owner->failed(owner, "timeout");
	if (witness)
		witness->failed(witness, "timeout");
	n = append(message, 0, sizeof(message), "pkcs11: ");
	n = append(message, n, sizeof(message), function);
	n = append(message, n, sizeof(message), expiry_tail);
	message[n] = '\0';
	log_emergency(message);
	_exit(EXIT_FAILURE);
}

static long elapsed_ms(const struct timespec *from, const struct timespec *to)
{
	return (long)(to->tv_sec - from->tv_sec) * 1000 + (to->tv_nsec - from->tv_nsec) / 1000000;
}

/* The watcher: takes the stop signals, and ends a call that outlasts the
 * timeout. A call is the same while the count of calls has not moved; the count
 * is read after the function, so it is never older than the call. */
static void *watch(void *arg)
{
	const struct timespec tick = { 0, TICK_MS * 1000000L };
	unsigned long seen_call = 0;
	struct timespec since = { 0 }, now;
	bool seen = false;

	(void)arg;
	for (;;) {
		int sig = sigtimedwait(&stop_signals, NULL, &tick);
		const char *function = current;
		unsigned long call = calls;

		if (sig > 0) {
			/* Outside a call at once; during one, as it returns (p11_call_end). */
			stop_signal = sig;
			if (!current)
				end_with(sig);
			continue;
		}
		if (!function) {
			seen = false;
			continue;
		}
		clock_gettime(CLOCK_MONOTONIC, &now);
		if (!seen || call != seen_call) {
			seen = true;
			seen_call = call;
			since = now;
		} else if (elapsed_ms(&since, &now) >= (long)timeout * 1000 &&
			   atomic_compare_exchange_strong(&current, &function, expiring)) {
			expire(function);
		}
	}
	return NULL;
}

/* The signals a module's crash raises, and what handled them before. */
static const struct {
	int sig;
	const char *name;
} crashes[] = {
	{ SIGSEGV, "SIGSEGV" }, { SIGBUS, "SIGBUS" }, { SIGABRT, "SIGABRT" }, { SIGILL, "SIGILL" }, { SIGFPE, "SIGFPE" },
};
#define N_CRASHES (sizeof(crashes) / sizeof(crashes[0]))
static struct sigaction before_crash[N_CRASHES];

/* A crash inside a call is its owner's to know; then the signal goes where it
 * went before (the default: the process dies of it; a sanitizer's report). */
static void crashed(int sig)
{
	const struct p11_call_owner *owner = current ? current_owner : NULL;

	for (size_t i = 0; i < N_CRASHES; i++)
		if (crashes[i].sig == sig) {
			if (owner)
				owner->failed(owner, crashes[i].name);
			if (witness && current)
				witness->failed(witness, crashes[i].name);
			sigaction(sig, &before_crash[i], NULL);
		}
	raise(sig); /* delivered when this returns; a fault also recurs */
}

int p11_call_init(unsigned timeout_seconds)
{
	struct sigaction crash = { .sa_handler = crashed };
	sigset_t all, normal;
	pthread_t thread;
	int err;

	timeout = timeout_seconds;
	snprintf(expiry_tail, sizeof(expiry_tail), " did not return within %u s (pkcs11.call_timeout); exiting",
		 timeout_seconds);
	sigemptyset(&stop_signals);
	sigaddset(&stop_signals, SIGTERM);
	sigaddset(&stop_signals, SIGINT);
	sigaddset(&stop_signals, SIGHUP);
	/* The watcher starts with every signal blocked, so that only sigtimedwait
	 * takes the stop signals there and the rest go to this thread as before;
	 * here the stop signals stay blocked from now on. */
	sigfillset(&all);
	if ((err = pthread_sigmask(SIG_BLOCK, &all, &normal)) != 0)
		goto fail;
	err = pthread_create(&thread, NULL, watch, NULL);
	sigorset(&normal, &normal, &stop_signals);
	pthread_sigmask(SIG_SETMASK, &normal, NULL);
	if (err != 0)
		goto fail;
	pthread_detach(thread);
	for (size_t i = 0; i < N_CRASHES; i++)
		sigaction(crashes[i].sig, &crash, &before_crash[i]);
	guarded = true;
	return 0;
fail:
	errno = err;
	return KR_E_SYSTEM;
}

void p11_call_set_witness(const struct p11_call_owner *w)
{
	witness = w;
}

void p11_call_begin(const char *function, const struct p11_call_owner *owner)
{
	if (!guarded)
		return;
	/* Only this thread counts: no locked increment. */
	atomic_store_explicit(&calls, atomic_load_explicit(&calls, memory_order_relaxed) + 1, memory_order_relaxed);
	current_owner = owner;
	current = function;
	/* The watcher stores the signal before it reads current; a signal it saw
	 * with no call in progress ends the process there. */
	if (stop_signal)
		end_with(stop_signal);
}

void p11_call_end(void)
{
	if (!guarded)
		return;
	if (atomic_exchange(&current, NULL) == expiring)
		for (;;)
			pause(); /* the watcher is ending the process */
	if (stop_signal)
		end_with(stop_signal);
}
