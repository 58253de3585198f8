// SPDX-License-Identifier: GPL-2.0
/*
 * app - make a process's memory move in controlled steps.
 *
 *   app SCENARIO [N]
 *
 * Scenarios: heap, stack, demand, mmap, thread (the experiments), and
 * maps N, threads N, stress [SECONDS], idle (targets for verification).
 *
 * At every checkpoint the app prints one line
 *   app scenario=NAME step=K action=WHAT key=value ...
 * and waits for SIGUSR1 before going on (at most WAIT_SECONDS), so a
 * host can inspect it while it stands still. APP_NOWAIT=1 skips the waits.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define WAIT_SECONDS 600
#define FRAME_BYTES 1024

static const char *scenario;
static int step;
static int nowait;
static sigset_t usr1;
static long page;

/* Wait for SIGUSR1; a SIGSTOP/SIGCONT from the host interrupts the wait (EINTR). */
static void wait_go(void)
{
	time_t deadline = time(NULL) + WAIT_SECONDS;
	struct timespec limit = { 0 };

	if (nowait)
		return;
	while ((limit.tv_sec = deadline - time(NULL)) > 0) {
		if (sigtimedwait(&usr1, NULL, &limit) >= 0)
			return;
		if (errno != EINTR && errno != EAGAIN)
			break;
	}
	fprintf(stderr, "app: no SIGUSR1 within %d s, exiting\n", WAIT_SECONDS);
	exit(3);
}

/* Print one checkpoint line (the caller gives the key=value tail). */
static void checkpoint(const char *action, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void checkpoint(const char *action, const char *fmt, ...)
{
	va_list ap;

	printf("app scenario=%s step=%d action=%s pid=%d brk=%p ", scenario, step++,
	       action, getpid(), sbrk(0));
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
	fflush(stdout);
	wait_go();
}

static void touch(void *p, size_t len)
{
	volatile char *c = p;
	size_t i;

	for (i = 0; i < len; i += (size_t)page)
		c[i] = 1;
	if (len)
		c[len - 1] = 1;
}

static int heap(void)
{
	static const size_t sizes[] = {
		16, 1024, 4096, 16384, 65536, 100000, 126976, 131072,
		200000, 1 << 20, 4 << 20, 16 << 20,
	};
	enum { N = sizeof(sizes) / sizeof(sizes[0]) };
	void *ptr[N];
	int i;

	checkpoint("start", "bytes=0");
	for (i = 0; i < N; i++) {
		ptr[i] = malloc(sizes[i]);
		if (!ptr[i])
			return 1;
		touch(ptr[i], sizes[i]);
		checkpoint("malloc", "bytes=%zu ptr=%p", sizes[i], ptr[i]);
	}
	for (i = N - 1; i >= 0; i--) {
		uintptr_t addr = (uintptr_t)ptr[i];

		free(ptr[i]);
		checkpoint("free", "bytes=%zu ptr=0x%lx", sizes[i], (unsigned long)addr);
	}
	return 0;
}

static const int depths[] = { 1, 100, 500, 1000, 2000, 4000, 6000 };
enum { NDEPTHS = sizeof(depths) / sizeof(depths[0]) };

static int recurse(int depth)
{
	volatile char frame[FRAME_BYTES];
	int i, sum = 0;

	frame[0] = (char)depth;
	frame[FRAME_BYTES - 1] = (char)depth;
	for (i = 0; i < NDEPTHS; i++)
		if (depths[i] == depth)
			checkpoint("recurse", "depth=%d frame_bytes=%d sp=%p", depth,
				   FRAME_BYTES, (void *)frame);
	if (depth < depths[NDEPTHS - 1])
		sum = recurse(depth + 1);
	return sum + frame[0] + frame[FRAME_BYTES - 1];
}

static int stack(void)
{
	volatile char here;

	checkpoint("start", "depth=0 sp=%p", (void *)&here);
	return recurse(1) == -1;
}

static int demand(void)
{
	static const int percent[] = { 0, 1, 10, 25, 50, 75, 100 };
	size_t len = 64 << 20, pages = len / (size_t)page, done = 0;
	char *p = mmap(NULL, len, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	unsigned int i;

	if (p == MAP_FAILED)
		return 1;
	for (i = 0; i < sizeof(percent) / sizeof(percent[0]); i++) {
		size_t want = pages * (size_t)percent[i] / 100;

		touch(p + done * (size_t)page, (want - done) * (size_t)page);
		done = want;
		checkpoint("touch", "region=%p bytes=%zu pages=%zu touched=%zu",
			   (void *)p, len, pages, done);
	}
	munmap(p, len);
	checkpoint("munmap", "region=0x%lx bytes=%zu touched=0", (unsigned long)(uintptr_t)p, len);
	return 0;
}

static int mmaps(void)
{
	static const size_t sizes[] = { 4096, 65536, 1 << 20, 8 << 20, 32 << 20 };
	enum { N = sizeof(sizes) / sizeof(sizes[0]) };
	void *p[N];
	int i;

	checkpoint("start", "bytes=0");
	for (i = 0; i < N; i++) {
		p[i] = mmap(NULL, sizes[i], PROT_READ | PROT_WRITE,
			    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (p[i] == MAP_FAILED)
			return 1;
		touch(p[i], sizes[i]);
		checkpoint("mmap", "bytes=%zu region=%p", sizes[i], p[i]);
	}
	for (i = N - 1; i >= 0; i--) {
		uintptr_t addr = (uintptr_t)p[i];

		munmap(p[i], sizes[i]);
		checkpoint("munmap", "bytes=%zu region=0x%lx", sizes[i], (unsigned long)addr);
	}
	return 0;
}

static void *sleeper(void *arg)
{
	volatile char local = 1;

	*(void **)arg = (void *)&local;
	pause();
	return NULL;
}

static int thread(void)
{
	pthread_t t;
	void *sp = NULL;

	checkpoint("start", "threads=1");
	if (pthread_create(&t, NULL, sleeper, &sp))
		return 1;
	while (!__atomic_load_n(&sp, __ATOMIC_SEQ_CST))
		usleep(1000);
	checkpoint("thread", "threads=2 thread_sp=%p", sp);
	pthread_cancel(t);
	pthread_join(t, NULL);
	checkpoint("joined", "threads=1");
	return 0;
}

/* N one-page mappings whose protections alternate, so none merge. */
static int many_maps(int n)
{
	int i;

	for (i = 0; i < n; i++) {
		int prot = (i & 1) ? PROT_READ : PROT_READ | PROT_WRITE;
		char *p = mmap(NULL, (size_t)page, PROT_READ | PROT_WRITE,
			       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

		if (p == MAP_FAILED)
			return 1;
		p[0] = 1;
		mprotect(p, (size_t)page, prot);
	}
	checkpoint("maps", "mappings=%d", n);
	return 0;
}

static int many_threads(int n)
{
	pthread_t t;
	void *sp;
	int i;

	for (i = 0; i < n; i++) {
		sp = NULL;
		if (pthread_create(&t, NULL, sleeper, &sp))
			return 1;
		while (!__atomic_load_n(&sp, __ATOMIC_SEQ_CST))
			usleep(100);
	}
	checkpoint("threads", "threads=%d", n + 1);
	return 0;
}

/* Threads that map, touch, mprotect, grow and unmap memory without pause. */
static void *churn(void *arg)
{
	unsigned int seed = (unsigned int)(uintptr_t)arg;

	for (;;) {
		size_t len = (size_t)page * (1 + rand_r(&seed) % 64);
		char *p = mmap(NULL, len, PROT_READ | PROT_WRITE,
			       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		char *q;

		if (p == MAP_FAILED)
			continue;
		touch(p, len);
		mprotect(p, len / 2, PROT_READ);
		q = mremap(p, len, len * 2, MREMAP_MAYMOVE);
		if (q != MAP_FAILED) {
			touch(q, len * 2);
			munmap(q, len * 2);
		} else {
			munmap(p, len);
		}
		free(malloc(1 + rand_r(&seed) % (256 << 10)));
	}
	return NULL;
}

static int stress(int seconds)
{
	pthread_t t;
	long i;

	for (i = 0; i < 3; i++)
		if (pthread_create(&t, NULL, churn, (void *)(i + 1)))
			return 1;
	printf("app scenario=stress step=0 action=running pid=%d threads=4\n", getpid());
	fflush(stdout);
	sleep((unsigned int)seconds);
	return 0;
}

static int idle(void)
{
	checkpoint("idle", "bytes=0");
	return 0;
}

int main(int argc, char **argv)
{
	int n = argc > 2 ? atoi(argv[2]) : 0;

	page = sysconf(_SC_PAGESIZE);
	nowait = getenv("APP_NOWAIT") != NULL;
	sigemptyset(&usr1);
	sigaddset(&usr1, SIGUSR1);
	sigprocmask(SIG_BLOCK, &usr1, NULL);
	scenario = argc > 1 ? argv[1] : "";
	setvbuf(stdout, NULL, _IOLBF, 0);

	if (!strcmp(scenario, "heap"))
		return heap();
	if (!strcmp(scenario, "stack"))
		return stack();
	if (!strcmp(scenario, "demand"))
		return demand();
	if (!strcmp(scenario, "mmap"))
		return mmaps();
	if (!strcmp(scenario, "thread"))
		return thread();
	if (!strcmp(scenario, "maps"))
		return many_maps(n > 0 ? n : 3000);
	if (!strcmp(scenario, "threads"))
		return many_threads(n > 0 ? n : 8);
	if (!strcmp(scenario, "stress"))
		return stress(n > 0 ? n : 3600);
	if (!strcmp(scenario, "idle"))
		return idle();
	fprintf(stderr, "usage: app heap|stack|demand|mmap|thread|maps N|threads N|stress S|idle\n");
	return 2;
}
