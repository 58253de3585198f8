/*
 * cycler: load and unload a kernel module COUNT times through the system calls
 * insmod and rmmod make (finit_module, delete_module), without starting a
 * process per step. One line per cycle, as the pipeline's cycle stage reads it:
 *
 *	cycle N rc=R ns=T
 *
 * R is 0 when the load succeeded (and the module was then unloaded), else the
 * errno of the failed step; T is the cycle's wall time in nanoseconds.
 *
 * Usage: cycler MODULE.ko NAME COUNT PARAMS
 * PARAMS is the module's parameter string; "%u" in it becomes the cycle number
 * (e.g. "pid=123 tag=c0x%u").
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static long long now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int cycle(int fd, const char *name, const char *params)
{
	if (syscall(SYS_finit_module, fd, params, 0) != 0)
		return errno;
	/* O_NONBLOCK: what rmmod passes; fail rather than wait for users. */
	if (syscall(SYS_delete_module, name, O_NONBLOCK) != 0)
		return errno;
	return 0;
}

int main(int argc, char **argv)
{
	char params[512];
	unsigned int i, count;
	int fd, rc;
	long long start;

	if (argc != 5) {
		fprintf(stderr, "usage: %s MODULE.ko NAME COUNT PARAMS\n", argv[0]);
		return 2;
	}
	count = (unsigned int)strtoul(argv[3], NULL, 10);
	fd = open(argv[1], O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		perror(argv[1]);
		return 1;
	}
	for (i = 1; i <= count; i++) {
		snprintf(params, sizeof(params), argv[4], i);
		start = now_ns();
		rc = cycle(fd, argv[2], params);
		printf("cycle %u rc=%d ns=%lld\n", i, rc, now_ns() - start);
		fflush(stdout);
	}
	close(fd);
	return 0;
}
