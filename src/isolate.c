/* SPDX-License-Identifier: BSD-3-Clause */
#include "config.h"

#include "isolate.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "p11_call.h"

/* The line that tells how a call ended the child, prefixed so that no line of
 * the work's can be taken for it. */
#define DIED "\x01died: "

/* Told of a call that crashed or outlasted its deadline (p11_call.h): one write
 * of plain copies, from a signal handler or the watcher thread. */
struct witness {
	struct p11_call_owner owner; /* first */
	int fd;
};

static void died(const struct p11_call_owner *owner, const char *cause)
{
	const struct witness *w = (const struct witness *)owner;
	char line[64];
	size_t n = 0;

	for (const char *p = DIED; *p && n < sizeof(line) - 1; p++)
		line[n++] = *p;
	for (const char *p = cause; *p && n < sizeof(line) - 1; p++)
		line[n++] = *p;
	line[n++] = '\n';
	(void)!write(w->fd, line, n);
}

static _Noreturn void child(unsigned call_timeout, void (*work)(void *arg, FILE *out), void *arg, int fd)
{
	static struct witness w;
	FILE *out = fdopen(fd, "w");
	int null = open("/dev/null", O_RDWR | O_CLOEXEC);

	if (!out || null < 0 || dup2(null, 0) < 0 || dup2(null, 1) < 0 || dup2(null, 2) < 0)
		_exit(EXIT_FAILURE);
	setvbuf(out, NULL, _IOLBF, 0);
	w = (struct witness){ { died }, fd };
	if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0 || setrlimit(RLIMIT_CORE, &(struct rlimit){ 0, 0 }) < 0 ||
	    p11_call_init(call_timeout) < 0)
		_exit(EXIT_FAILURE);
	p11_call_set_witness(&w.owner);
	work(arg, out);
	fflush(out);
	_exit(EXIT_SUCCESS);
}

int isolate_run(unsigned call_timeout, void (*work)(void *arg, FILE *out), void (*line)(void *arg, char *text),
		void *arg, struct isolate_end *ret)
{
	struct isolate_end end = { 0 };
	char *text = NULL;
	size_t size = 0;
	ssize_t len;
	int p[2], status = 0;
	FILE *in;
	pid_t pid;

	fflush(stdout);
	fflush(stderr);
	if (pipe2(p, O_CLOEXEC) < 0)
		return KR_E_SYSTEM;
	if ((pid = fork()) < 0) {
		close(p[0]);
		close(p[1]);
		return KR_E_SYSTEM;
	}
	if (pid == 0) {
		close(p[0]);
		child(call_timeout, work, arg, p[1]);
	}
	close(p[1]);
	if (!(in = fdopen(p[0], "r"))) {
		close(p[0]);
		kill(pid, SIGKILL);
	}
	while (in && (len = getline(&text, &size, in)) > 0) {
		if (text[len - 1] == '\n')
			text[--len] = '\0';
		if (strncmp(text, DIED, strlen(DIED)) == 0) {
			end.died = true;
			snprintf(end.cause, sizeof(end.cause), "%s", text + strlen(DIED));
		} else {
			line(arg, text);
		}
	}
	free(text);
	if (in)
		fclose(in);
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	if (!end.died && WIFSIGNALED(status)) {
		const char *abbrev = sigabbrev_np(WTERMSIG(status));

		end.died = true;
		snprintf(end.cause, sizeof(end.cause), "SIG%s", abbrev ? abbrev : "?");
	} else if (!end.died) {
		end.status = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
	}
	*ret = end;
	return 0;
}
