// SPDX-License-Identifier: GPL-2.0
/*
 * app - make a process's memory move in controlled steps.
 *
 *   app SCENARIO [N]
 *
 * Scenarios: heap, stack, demand, mmap, thread, zoo (the experiments),
 * maps N, threads N, stress [SECONDS], idle (targets for verification), and
 * churn FILE [EVERY] (operations read from FILE: memlayout/fuzz).
 *
 * At every checkpoint the app prints one line
 *   app scenario=NAME step=K action=WHAT key=value ...
 * and waits for SIGUSR1 before going on (at most WAIT_SECONDS), so a
 * host can inspect it while it stands still. APP_NOWAIT=1 skips the waits.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* Constants newer than the oldest guest's headers (bullseye, glibc 2.31). */
#ifndef MADV_FREE
#define MADV_FREE 8
#endif
#ifndef MADV_HUGEPAGE
#define MADV_HUGEPAGE 14
#endif
#ifndef MADV_NOHUGEPAGE
#define MADV_NOHUGEPAGE 15
#endif
#ifndef MADV_PAGEOUT
#define MADV_PAGEOUT 21
#endif
#ifndef MADV_GUARD_INSTALL
#define MADV_GUARD_INSTALL 102
#endif
#ifndef MAP_HUGETLB
#define MAP_HUGETLB 0x40000
#endif
#ifndef MAP_GROWSDOWN
#define MAP_GROWSDOWN 0x0100
#endif
#ifndef MAP_NORESERVE
#define MAP_NORESERVE 0x4000
#endif
#ifndef MFD_CLOEXEC
#define MFD_CLOEXEC 0x0001U
#endif
#ifndef __NR_memfd_create
#define __NR_memfd_create 319
#endif
#ifndef __NR_userfaultfd
#define __NR_userfaultfd 323
#endif
#ifndef __NR_memfd_secret
#define __NR_memfd_secret 447
#endif

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

/*
 * zoo: one region per page state, each a checkpoint. The regions live in
 * 8 MiB slots of a PROT_NONE reservation (MAP_NORESERVE, so its flags
 * differ from every region's and nothing merges with a neighbour), each
 * region at the 2 MiB-aligned start of its slot. Every region stays until
 * the app exits, so each checkpoint verifies all earlier states again.
 */
#define MIB (1UL << 20)
#define ZOO_SLOT (8 * MIB)
#define ZOO_SLOTS 20
#define HUGE (2 * MIB)

static char *zoo_base;
static int zoo_next;

static const char *errname(int e)
{
	static char buf[32];

	switch (e) {
	case EINVAL: return "EINVAL";
	case ENOMEM: return "ENOMEM";
	case ENOSYS: return "ENOSYS";
	case EPERM: return "EPERM";
	case EAGAIN: return "EAGAIN";
	case EACCES: return "EACCES";
	case EBUSY: return "EBUSY";
	case ENOSPC: return "ENOSPC";
	case ENODEV: return "ENODEV";
	case EFAULT: return "EFAULT";
	case EEXIST: return "EEXIST";
	}
	snprintf(buf, sizeof(buf), "errno%d", e);
	return buf;
}

/* Put the PROT_NONE reservation back over [p, p + len). */
static void reserve(void *p, size_t len)
{
	mmap(p, len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED,
	     -1, 0);
}

static char *zoo_slot(void)
{
	if (zoo_next >= ZOO_SLOTS) {
		errno = ENOSPC;
		return NULL;
	}
	return zoo_base + (size_t)zoo_next++ * ZOO_SLOT;
}

/* Map len bytes at the next slot; NULL (errno set, slot reserved again) on failure. */
static char *place(size_t len, int prot, int flags, int fd, off_t off)
{
	char *slot = zoo_slot();
	void *p;
	int e;

	if (!slot)
		return NULL;
	p = mmap(slot, len, prot, flags | MAP_FIXED, fd, off);
	if (p != MAP_FAILED)
		return p;
	e = errno;
	reserve(slot, len);
	errno = e;
	return NULL;
}

static char *place_anon(size_t len)
{
	return place(len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
}

static int skip(const char *action, const char *why, int e)
{
	checkpoint(action, "skipped=1 reason=%s%s%s", why, e ? "_" : "", e ? errname(e) : "");
	return 0;
}

/* Read one byte per page (read faults only). */
static unsigned long read_pages(const char *p, size_t len, size_t stride)
{
	const volatile char *c = p;
	unsigned long sum = 0;
	size_t i;

	for (i = 0; i < len; i += stride)
		sum += (unsigned long)c[i];
	return sum;
}

/* The first line of a sysfs/procfs file, or "" (newline cut). */
static void read_line(const char *path, char *buf, size_t size)
{
	FILE *f = fopen(path, "r");

	buf[0] = 0;
	if (f) {
		if (!fgets(buf, (int)size, f))
			buf[0] = 0;
		fclose(f);
	}
	buf[strcspn(buf, "\n")] = 0;
}

/* A field (kB) of this process's smaps for the VMA starting at p; -1 if absent. */
static long smaps_kb(const void *p, const char *key)
{
	char line[512], head[32];
	size_t klen = strlen(key);
	FILE *f = fopen("/proc/self/smaps", "r");
	int in = 0;
	long kb = -1;

	if (!f)
		return -1;
	snprintf(head, sizeof(head), "%lx-", (unsigned long)(uintptr_t)p);
	while (fgets(line, sizeof(line), f)) {
		if (!strncmp(line, head, strlen(head))) {
			in = 1;
		} else if (in && !strncmp(line, key, klen) && line[klen] == ':') {
			/* Every VMA has the field: the first one after the header is ours. */
			kb = strtol(line + klen + 1, NULL, 10);
			break;
		}
	}
	fclose(f);
	return kb;
}

static int swap_active(void)
{
	char line[256];
	FILE *f = fopen("/proc/swaps", "r");
	int n = 0;

	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f))
		n++;
	fclose(f);
	return n > 1;	/* a header line, then one per swap area */
}

#define ZPAGES(len) ((unsigned long)((len) / (size_t)page))

/* Written pages, then PROT_NONE: the pages stay (present, counted). */
static int zoo_prot_none(void)
{
	size_t len = MIB, touched = len / 4;
	char *p = place_anon(len);

	if (!p)
		return skip("prot_none", "mmap", errno);
	touch(p, touched);
	if (mprotect(p, len, PROT_NONE))
		return skip("prot_none", "mprotect", errno);
	checkpoint("prot_none", "region=%p bytes=%zu pages=%lu touched=%lu", (void *)p,
		   len, ZPAGES(len), ZPAGES(touched));
	return 0;
}

/* Read faults without THP: every page maps the shared 4 KiB zero page. */
static int zoo_zero(void)
{
	size_t len = MIB;
	char *p = place_anon(len);

	if (!p)
		return skip("zero", "mmap", errno);
	madvise(p, len, MADV_NOHUGEPAGE);
	read_pages(p, len, (size_t)page);
	checkpoint("zero", "region=%p bytes=%zu pages=%lu touched=0 read=%lu", (void *)p,
		   len, ZPAGES(len), ZPAGES(len));
	return 0;
}

/* Read faults in THP-enabled memory: one huge zero page per 2 MiB. */
static int zoo_huge_zero(const char *thp, const char *zero_page)
{
	size_t len = 2 * HUGE;
	char *p;

	if (!thp[0])
		return skip("huge_zero", "no_thp", 0);
	if (strstr(thp, "[never]"))
		return skip("huge_zero", "thp_never", 0);
	if (zero_page[0] != '1')
		return skip("huge_zero", "use_zero_page_off", 0);
	p = place_anon(len);
	if (!p)
		return skip("huge_zero", "mmap", errno);
	if (madvise(p, len, MADV_HUGEPAGE))
		return skip("huge_zero", "madvise", errno);
	read_pages(p, len, HUGE);
	checkpoint("huge_zero", "region=%p bytes=%zu pages=%lu touched=0 read=%lu", (void *)p,
		   len, ZPAGES(len), (unsigned long)(len / HUGE));
	return 0;
}

/* A written THP, then mprotect of its upper half splits VMA and PMD. */
static int zoo_thp(void)
{
	size_t len = HUGE;
	char *p = place_anon(len);
	long huge_kb;

	if (!p) {
		int e = errno;

		skip("thp", "mmap", e);
		return skip("thp_split", "mmap", e);
	}
	madvise(p, len, MADV_HUGEPAGE);
	touch(p, len);
	huge_kb = smaps_kb(p, "AnonHugePages");
	checkpoint("thp", "region=%p bytes=%zu pages=%lu touched=%lu anon_huge_kb=%ld",
		   (void *)p, len, ZPAGES(len), ZPAGES(len), huge_kb);
	if (mprotect(p + len / 2, len / 2, PROT_READ))
		return skip("thp_split", "mprotect", errno);
	checkpoint("thp_split",
		   "region=%p upper=%p bytes=%zu pages=%lu touched=%lu upper_touched=%lu anon_huge_kb=%ld",
		   (void *)p, (void *)(p + len / 2), len / 2, ZPAGES(len / 2), ZPAGES(len / 2),
		   ZPAGES(len / 2), smaps_kb(p, "AnonHugePages"));
	return 0;
}

/* Two 2 MiB hugetlb pages reserved, the first one touched. */
static int zoo_hugetlb(void)
{
	size_t len = 2 * HUGE;
	char *p = place(len, PROT_READ | PROT_WRITE,
			MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB, -1, 0);

	if (!p)
		return skip("hugetlb", "mmap", errno);
	touch(p, HUGE);
	checkpoint("hugetlb", "region=%p bytes=%zu pages=%lu touched=%lu huge_pages=%lu",
		   (void *)p, len, ZPAGES(len), ZPAGES(HUGE), (unsigned long)(len / HUGE));
	return 0;
}

/* Shared anonymous memory (shmem behind /dev/zero), half written. */
static int zoo_shmem(void)
{
	size_t len = MIB;
	char *p = place(len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);

	if (!p)
		return skip("shmem", "mmap", errno);
	touch(p, len / 2);
	checkpoint("shmem", "region=%p bytes=%zu pages=%lu touched=%lu", (void *)p, len,
		   ZPAGES(len), ZPAGES(len / 2));
	return 0;
}

static int zoo_memfd(void)
{
	size_t len = MIB;
	int fd = (int)syscall(__NR_memfd_create, "zoo", MFD_CLOEXEC);
	char *p;

	if (fd < 0)
		return skip("memfd", "memfd_create", errno);
	if (ftruncate(fd, (off_t)len)) {
		close(fd);
		return skip("memfd", "ftruncate", errno);
	}
	p = place(len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	close(fd);
	if (!p)
		return skip("memfd", "mmap", errno);
	touch(p, len / 2);
	checkpoint("memfd", "region=%p bytes=%zu pages=%lu touched=%lu", (void *)p, len,
		   ZPAGES(len), ZPAGES(len / 2));
	return 0;
}

/* Written, then MADV_DONTNEED (drops at once) or MADV_FREE (lazily) on half. */
static int zoo_advise(const char *action, int advice)
{
	size_t len = MIB;
	char *p = place_anon(len);

	if (!p)
		return skip(action, "mmap", errno);
	madvise(p, len, MADV_NOHUGEPAGE);
	touch(p, len);
	if (madvise(p, len / 2, advice))
		return skip(action, "madvise", errno);
	checkpoint(action, "region=%p bytes=%zu pages=%lu touched=%lu advised=%lu", (void *)p,
		   len, ZPAGES(len), ZPAGES(len), ZPAGES(len / 2));
	return 0;
}

/* 1 MiB written, then moved to another slot and grown to 1.5 MiB. */
static int zoo_mremap(void)
{
	size_t len = MIB, grown = MIB + MIB / 2;
	char *p = place_anon(len), *to = zoo_slot();
	void *q;

	if (!p || !to)
		return skip("mremap", "mmap", errno);
	madvise(p, len, MADV_NOHUGEPAGE);
	touch(p, len);
	q = mremap(p, len, grown, MREMAP_MAYMOVE | MREMAP_FIXED, to);
	if (q == MAP_FAILED)
		return skip("mremap", "mremap", errno);
	reserve(p, len);
	checkpoint("mremap", "region=%p old=%p bytes=%zu pages=%lu touched=%lu", q, (void *)p,
		   grown, ZPAGES(grown), ZPAGES(len));
	return 0;
}

/* A private file mapping (at offset 64 KiB) read whole, half written (COW). */
static int zoo_file_cow(void)
{
	size_t len = MIB, off = 64 << 10, done = 0;
	char path[64], buf[4096];
	char *p;
	int fd;

	snprintf(path, sizeof(path), "/tmp/zoo-file-%d", getpid());
	fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return skip("file_cow", "open", errno);
	memset(buf, 'z', sizeof(buf));
	while (done < len + off) {
		ssize_t n = write(fd, buf, sizeof(buf));

		if (n <= 0) {
			close(fd);
			unlink(path);
			return skip("file_cow", "write", errno);
		}
		done += (size_t)n;
	}
	p = place(len, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, (off_t)off);
	close(fd);
	unlink(path);	/* maps then names it "PATH (deleted)" */
	if (!p)
		return skip("file_cow", "mmap", errno);
	read_pages(p, len, (size_t)page);
	touch(p, len / 2);
	checkpoint("file_cow",
		   "region=%p bytes=%zu pages=%lu touched=%lu read=%lu offset=%zu",
		   (void *)p, len, ZPAGES(len), ZPAGES(len / 2), ZPAGES(len), off);
	return 0;
}

static int zoo_mlock(void)
{
	size_t len = MIB;
	char *p = place_anon(len);

	if (!p)
		return skip("mlock", "mmap", errno);
	if (mlock(p, len))
		return skip("mlock", "mlock", errno);
	checkpoint("mlock", "region=%p bytes=%zu pages=%lu touched=%lu", (void *)p, len,
		   ZPAGES(len), ZPAGES(len));
	return 0;
}

/* Written, then pushed out to swap with MADV_PAGEOUT (5.4+). */
static int zoo_pageout(void)
{
	size_t len = MIB;
	char *p;

	if (!swap_active())
		return skip("pageout", "no_swap", 0);
	p = place_anon(len);
	if (!p)
		return skip("pageout", "mmap", errno);
	madvise(p, len, MADV_NOHUGEPAGE);
	touch(p, len);
	if (madvise(p, len, MADV_PAGEOUT))
		return skip("pageout", "madvise", errno);
	checkpoint("pageout", "region=%p bytes=%zu pages=%lu touched=%lu", (void *)p, len,
		   ZPAGES(len), ZPAGES(len));
	return 0;
}

/* A range registered with userfaultfd (missing mode); some pages touched before. */
static int zoo_uffd(void)
{
	size_t len = MIB, touched = 16 * (size_t)page;
	struct uffdio_api api = { .api = UFFD_API };
	struct uffdio_register reg = { 0 };
	int fd = (int)syscall(__NR_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	char *p;

	if (fd < 0)
		return skip("uffd", "userfaultfd", errno);
	if (ioctl(fd, UFFDIO_API, &api)) {
		close(fd);
		return skip("uffd", "uffdio_api", errno);
	}
	p = place_anon(len);
	if (!p) {
		close(fd);
		return skip("uffd", "mmap", errno);
	}
	madvise(p, len, MADV_NOHUGEPAGE);
	touch(p, touched);
	reg.range.start = (unsigned long)(uintptr_t)p;
	reg.range.len = len;
	reg.mode = UFFDIO_REGISTER_MODE_MISSING;
	if (ioctl(fd, UFFDIO_REGISTER, &reg)) {
		close(fd);
		return skip("uffd", "uffdio_register", errno);
	}
	/* fd stays open (and the range registered) until exit; nothing touches it. */
	checkpoint("uffd", "region=%p bytes=%zu pages=%lu touched=%lu", (void *)p, len,
		   ZPAGES(len), ZPAGES(touched));
	return 0;
}

/* memfd_secret (5.14+, often disabled): pages out of the kernel's direct map. */
static int zoo_secret(void)
{
	size_t len = MIB, touched = 16 * (size_t)page;
	int fd = (int)syscall(__NR_memfd_secret, 0);
	char *p;

	if (fd < 0)
		return skip("secret", "memfd_secret", errno);
	if (ftruncate(fd, (off_t)len)) {
		close(fd);
		return skip("secret", "ftruncate", errno);
	}
	p = place(len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	close(fd);
	if (!p)
		return skip("secret", "mmap", errno);
	touch(p, touched);
	checkpoint("secret", "region=%p bytes=%zu pages=%lu touched=%lu", (void *)p, len,
		   ZPAGES(len), ZPAGES(touched));
	return 0;
}

/* A MAP_GROWSDOWN mapping, its top pages touched (no growth). */
static int zoo_growsdown(void)
{
	size_t len = MIB, touched = 16 * (size_t)page;
	char *p = place(len, PROT_READ | PROT_WRITE,
			MAP_PRIVATE | MAP_ANONYMOUS | MAP_GROWSDOWN, -1, 0);

	if (!p)
		return skip("growsdown", "mmap", errno);
	touch(p + len - touched, touched);
	checkpoint("growsdown", "region=%p bytes=%zu pages=%lu touched=%lu", (void *)p, len,
		   ZPAGES(len), ZPAGES(touched));
	return 0;
}

/* Written, then guard regions (6.13+) over the first 16 pages: they are zapped. */
static int zoo_guard(void)
{
	size_t len = MIB, guarded = 16 * (size_t)page;
	char *p = place_anon(len);

	if (!p)
		return skip("guard", "mmap", errno);
	madvise(p, len, MADV_NOHUGEPAGE);
	touch(p, len);
	if (madvise(p, guarded, MADV_GUARD_INSTALL))
		return skip("guard", "madvise", errno);
	checkpoint("guard", "region=%p bytes=%zu pages=%lu touched=%lu guarded=%lu",
		   (void *)p, len, ZPAGES(len), ZPAGES(len), ZPAGES(guarded));
	return 0;
}

static int zoo(void)
{
	char thp[128], zero_page[16];
	char *p = mmap(NULL, (ZOO_SLOTS + 1) * ZOO_SLOT, PROT_NONE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);

	if (p == MAP_FAILED)
		return 1;
	/* Slots start 2 MiB-aligned; the slack stays reserved. */
	zoo_base = (char *)(((uintptr_t)p + HUGE - 1) & ~(uintptr_t)(HUGE - 1));
	read_line("/sys/kernel/mm/transparent_hugepage/enabled", thp, sizeof(thp));
	read_line("/sys/kernel/mm/transparent_hugepage/use_zero_page", zero_page,
		  sizeof(zero_page));

	zoo_prot_none();
	zoo_zero();
	zoo_huge_zero(thp, zero_page);
	zoo_thp();
	zoo_hugetlb();
	zoo_shmem();
	zoo_memfd();
	zoo_advise("dontneed", MADV_DONTNEED);
	zoo_advise("free", MADV_FREE);
	zoo_mremap();
	zoo_file_cow();
	zoo_mlock();
	zoo_pageout();
	zoo_uffd();
	zoo_secret();
	zoo_growsdown();
	zoo_guard();
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

/*
 * churn FILE [EVERY]: randomized differential churn (memlayout/fuzz). FILE holds
 * one operation per line on a few slots (regions); the grammar is
 * memlayout/fuzz/ops.py's:
 *   map S PAGES PROT KIND FLAG PGOFF   unmap S OFF PAGES   protect S OFF PAGES PROT
 *   advise S OFF PAGES ADVICE   remap S PAGES maymove|inplace
 *   touch S OFF PAGES read|write   lock|unlock S OFF PAGES   name S OFF PAGES LABEL
 *   fork   reap   thread   join   brk DELTA
 * Every operation is valid in any state: a range is cut to its slot, an
 * operation on an empty slot does nothing (result=noop), a fault while
 * touching is caught and counted. An operation the kernel refuses is
 * result=refused err=ENAME. After every EVERY-th operation and after the last
 * a checkpoint says what the last one did, with running totals.
 */
#ifndef MADV_REMOVE
#define MADV_REMOVE 9
#endif
#ifndef MADV_DONTFORK
#define MADV_DONTFORK 10
#endif
#ifndef MADV_DOFORK
#define MADV_DOFORK 11
#endif
#ifndef MADV_MERGEABLE
#define MADV_MERGEABLE 12
#endif
#ifndef MADV_UNMERGEABLE
#define MADV_UNMERGEABLE 13
#endif
#ifndef MADV_DONTDUMP
#define MADV_DONTDUMP 16
#endif
#ifndef MADV_DODUMP
#define MADV_DODUMP 17
#endif
#ifndef MADV_WIPEONFORK
#define MADV_WIPEONFORK 18
#endif
#ifndef MADV_KEEPONFORK
#define MADV_KEEPONFORK 19
#endif
#ifndef MADV_COLD
#define MADV_COLD 20
#endif
#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22
#endif
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif
#ifndef MADV_COLLAPSE
#define MADV_COLLAPSE 25
#endif
#ifndef PR_SET_VMA
#define PR_SET_VMA 0x53564d41
#endif
#ifndef PR_SET_VMA_ANON_NAME
#define PR_SET_VMA_ANON_NAME 0
#endif
#ifndef PR_SET_PDEATHSIG
#define PR_SET_PDEATHSIG 1
#endif

#define CHURN_SLOTS 8
#define CHURN_CHILDREN 2
#define CHURN_THREADS 4
#define CHURN_FILE_PAGES 8192UL
#define CHURN_WORDS 8

struct churn_slot {
	char *addr;
	size_t pages;
	int file;	/* backed by the churn file: touches stay below its end */
	size_t pgoff;
};

struct named {
	const char *name;
	int value;
};

static struct churn_slot slots[CHURN_SLOTS];
static pid_t children[CHURN_CHILDREN];
static int nchildren;
static pthread_t threads[CHURN_THREADS];
static int nthreads;
static int churn_fd = -1;
static char *brk_base;
static size_t brk_pages;
static unsigned long churn_faults;
static sigjmp_buf touch_env;
static volatile sig_atomic_t touching;

static const struct named prots[] = {
	{ "none", PROT_NONE }, { "r", PROT_READ }, { "rw", PROT_READ | PROT_WRITE },
	{ "rx", PROT_READ | PROT_EXEC }, { "rwx", PROT_READ | PROT_WRITE | PROT_EXEC },
	{ NULL, 0 },
};

static const struct named advices[] = {
	{ "dontneed", MADV_DONTNEED }, { "free", MADV_FREE }, { "pageout", MADV_PAGEOUT },
	{ "cold", MADV_COLD }, { "willneed", MADV_WILLNEED }, { "hugepage", MADV_HUGEPAGE },
	{ "nohugepage", MADV_NOHUGEPAGE }, { "mergeable", MADV_MERGEABLE },
	{ "unmergeable", MADV_UNMERGEABLE }, { "dontfork", MADV_DONTFORK },
	{ "dofork", MADV_DOFORK }, { "wipeonfork", MADV_WIPEONFORK },
	{ "keeponfork", MADV_KEEPONFORK }, { "dontdump", MADV_DONTDUMP },
	{ "dodump", MADV_DODUMP }, { "remove", MADV_REMOVE }, { "collapse", MADV_COLLAPSE },
	{ "populate_read", MADV_POPULATE_READ }, { "populate_write", MADV_POPULATE_WRITE },
	{ NULL, 0 },
};

/* The value of ``word`` in a NULL-ended table; -1 if it is not there. */
static int named_value(const struct named *table, const char *word)
{
	for (; table->name; table++)
		if (!strcmp(table->name, word))
			return table->value;
	return -1;
}

static void churn_fault(int sig)
{
	if (touching)
		siglongjmp(touch_env, 1);
	signal(sig, SIG_DFL);
	raise(sig);
}

static size_t number(const char *word)
{
	return word ? (size_t)strtoul(word, NULL, 10) : 0;
}

/* Cut [off, off + n) pages to the slot; 0 when nothing of it is left. */
static size_t cut(const struct churn_slot *s, size_t off, size_t n)
{
	if (!s->addr || off >= s->pages)
		return 0;
	return n < s->pages - off ? n : s->pages - off;
}

/* Write or read one byte per page; a fault (PROT_NONE, a hole, SIGBUS) skips the page. */
static void churn_touch(char *p, size_t pages, int write)
{
	volatile size_t i;

	for (i = 0; i < pages; i++) {
		volatile char *c = p + i * (size_t)page;

		touching = 1;
		if (sigsetjmp(touch_env, 1)) {
			churn_faults++;
			continue;
		}
		if (write)
			*c = (char)i;
		else
			(void)*c;
		touching = 0;
	}
	touching = 0;
}

static void *churn_sleeper(void *arg)
{
	(void)arg;
	for (;;)
		pause();
	return NULL;
}

static int churn_fork(void)
{
	pid_t parent = getpid(), child;

	if (nchildren == CHURN_CHILDREN)
		return -2;
	child = fork();
	if (child < 0)
		return -1;
	if (child == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(0);
		for (;;)
			pause();
	}
	children[nchildren++] = child;
	return 0;
}

static int churn_reap(void)
{
	if (!nchildren)
		return -2;
	kill(children[0], SIGKILL);
	waitpid(children[0], NULL, 0);
	memmove(children, children + 1, (size_t)--nchildren * sizeof(children[0]));
	return 0;
}

/* Grow (write the new pages) or shrink the heap by delta pages, never below its start. */
static int churn_brk(long delta)
{
	size_t want = delta < 0 && (size_t)-delta > brk_pages ? 0 : brk_pages + (size_t)delta;

	if (brk(brk_base + want * (size_t)page))
		return -1;
	if (want > brk_pages)
		churn_touch(brk_base + brk_pages * (size_t)page, want - brk_pages, 1);
	brk_pages = want;
	return 0;
}

static int churn_map(struct churn_slot *s, char **w, size_t n)
{
	int prot = named_value(prots, w[3] ? w[3] : "");
	const char *kind = w[4] ? w[4] : "anon", *flag = w[5] ? w[5] : "-";
	size_t pgoff = number(w[6]);
	int flags = MAP_PRIVATE, fd = -1;
	void *p;

	if (prot < 0 || !n)
		return -3;
	if (s->addr)
		munmap(s->addr, s->pages * (size_t)page);
	s->addr = NULL;
	s->pages = 0;
	s->file = 0;
	if (!strcmp(kind, "shared")) {
		flags = MAP_SHARED | MAP_ANONYMOUS;
	} else if (!strcmp(kind, "file") || !strcmp(kind, "fileshared")) {
		flags = kind[4] ? MAP_SHARED : MAP_PRIVATE;
		fd = churn_fd;
		if (pgoff + n > CHURN_FILE_PAGES)
			pgoff = 0;
	} else if (!strcmp(kind, "hugetlb")) {
		flags |= MAP_ANONYMOUS | MAP_HUGETLB;
	} else {
		flags |= MAP_ANONYMOUS;
	}
	if (fd < 0)
		pgoff = 0;
	if (!strcmp(flag, "populate"))
		flags |= MAP_POPULATE;
	else if (!strcmp(flag, "locked"))
		flags |= MAP_LOCKED;
	else if (!strcmp(flag, "noreserve"))
		flags |= MAP_NORESERVE;
	p = mmap(NULL, n * (size_t)page, prot, flags, fd, (off_t)(pgoff * (size_t)page));
	if (p == MAP_FAILED)
		return -1;
	s->addr = p;
	s->pages = n;
	s->file = fd >= 0;
	s->pgoff = pgoff;
	return 0;
}

static int churn_remap(struct churn_slot *s, size_t n, const char *mode)
{
	int may = mode && !strcmp(mode, "maymove");
	void *q;

	if (!s->addr)
		return -2;
	if (!n)
		return -3;
	if (s->file && s->pgoff + n > CHURN_FILE_PAGES)
		n = CHURN_FILE_PAGES - s->pgoff;
	q = mremap(s->addr, s->pages * (size_t)page, n * (size_t)page, may ? MREMAP_MAYMOVE : 0);
	if (q == MAP_FAILED)
		return -1;
	s->addr = q;
	s->pages = n;
	return 0;
}

/*
 * One operation; returns 0 (done), -1 (refused, errno set), -2 (nothing to do)
 * or -3 (a line the grammar does not know). *region is the first address it
 * worked on (0: none).
 */
static int churn_op(char **w, uintptr_t *region)
{
	const char *op = w[0];
	struct churn_slot *s = NULL;
	size_t off = number(w[2]), n = number(w[3]), len;
	char *at;

	*region = 0;
	if (!strcmp(op, "fork"))
		return churn_fork();
	if (!strcmp(op, "reap"))
		return churn_reap();
	if (!strcmp(op, "thread")) {
		if (nthreads == CHURN_THREADS)
			return -2;
		errno = pthread_create(&threads[nthreads], NULL, churn_sleeper, NULL);
		return errno ? -1 : (nthreads++, 0);
	}
	if (!strcmp(op, "join")) {
		if (!nthreads)
			return -2;
		nthreads--;
		pthread_cancel(threads[nthreads]);
		pthread_join(threads[nthreads], NULL);
		return 0;
	}
	if (!strcmp(op, "brk"))
		return churn_brk(w[1] ? strtol(w[1], NULL, 10) : 0);
	if (!w[1] || number(w[1]) >= CHURN_SLOTS)
		return -3;
	s = &slots[number(w[1])];
	if (!strcmp(op, "map")) {
		if (churn_map(s, w, number(w[2])))
			return -1;
		*region = (uintptr_t)s->addr;
		return 0;
	}
	if (!strcmp(op, "remap")) {
		int r = churn_remap(s, number(w[2]), w[3]);

		*region = (uintptr_t)s->addr;
		return r;
	}
	len = cut(s, off, n);
	if (!len)
		return -2;
	at = s->addr + off * (size_t)page;
	*region = (uintptr_t)at;
	if (!strcmp(op, "unmap")) {
		*region = 0;
		if (munmap(at, len * (size_t)page))
			return -1;
		if (off == 0 && len == s->pages)
			memset(s, 0, sizeof(*s));
		return 0;
	}
	if (!strcmp(op, "protect")) {
		int prot = named_value(prots, w[4] ? w[4] : "");

		return prot < 0 ? -3 : mprotect(at, len * (size_t)page, prot);
	}
	if (!strcmp(op, "advise")) {
		int advice = named_value(advices, w[4] ? w[4] : "");

		return advice < 0 ? -3 : madvise(at, len * (size_t)page, advice);
	}
	if (!strcmp(op, "touch")) {
		if (s->file && s->pgoff + off + len > CHURN_FILE_PAGES)
			return -2;
		churn_touch(at, len, w[4] && !strcmp(w[4], "write"));
		return 0;
	}
	if (!strcmp(op, "lock"))
		return mlock(at, len * (size_t)page);
	if (!strcmp(op, "unlock"))
		return munlock(at, len * (size_t)page);
	if (!strcmp(op, "name")) {
		char label[32];

		snprintf(label, sizeof(label), "churn_%s", w[4] ? w[4] : "x");
		return prctl(PR_SET_VMA, PR_SET_VMA_ANON_NAME, (unsigned long)(uintptr_t)at,
			     len * (size_t)page, (unsigned long)(uintptr_t)label);
	}
	return -3;
}

static int churn_setup(void)
{
	char path[64];
	struct sigaction sa = { 0 };

	sa.sa_handler = churn_fault;
	sigemptyset(&sa.sa_mask);
	sa.sa_flags = SA_NODEFER;
	if (sigaction(SIGSEGV, &sa, NULL) || sigaction(SIGBUS, &sa, NULL))
		return -1;
	snprintf(path, sizeof(path), "/tmp/churn-file-%d", getpid());
	churn_fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (churn_fd < 0)
		return -1;
	unlink(path);	/* maps names it "PATH (deleted)" */
	if (ftruncate(churn_fd, (off_t)(CHURN_FILE_PAGES * (size_t)page)))
		return -1;
	free(malloc(1));	/* malloc's arena first: the churned heap lies above it */
	brk_base = sbrk(0);
	return 0;
}

static int churn_main(const char *file, int every)
{
	char line[256], *w[CHURN_WORDS + 1];
	unsigned long index = 0, done = 0, refused = 0, noop = 0;
	FILE *f = fopen(file, "r");
	int more;

	if (!f) {
		fprintf(stderr, "app: churn: %s: %s\n", file, strerror(errno));
		return 1;
	}
	if (churn_setup()) {
		fprintf(stderr, "app: churn: setup: %s\n", strerror(errno));
		return 1;
	}
	if (every < 1)
		every = 1;
	more = fgets(line, sizeof(line), f) != NULL;
	while (more) {
		uintptr_t region;
		int nw = 0, r, e;
		char *save = NULL, *tok;

		line[strcspn(line, "\n")] = 0;
		memset(w, 0, sizeof(w));	/* missing words read as NULL */
		for (tok = strtok_r(line, " \t", &save); tok && nw < CHURN_WORDS;
		     tok = strtok_r(NULL, " \t", &save))
			w[nw++] = tok;
		if (!nw || w[0][0] == '#') {
			more = fgets(line, sizeof(line), f) != NULL;
			continue;
		}
		errno = 0;
		r = churn_op(w, &region);
		e = errno;
		if (r == -3) {
			fprintf(stderr, "app: churn: line %lu: unknown operation %s\n", index + 1, w[0]);
			return 2;
		}
		done += r == 0;
		refused += r == -1;
		noop += r == -2;
		/* The checkpoint comes after the last operation too: look ahead for it. */
		{
			char op[16];

			snprintf(op, sizeof(op), "%s", w[0]);
			more = fgets(line, sizeof(line), f) != NULL;
			if (!more || (index + 1) % (unsigned long)every == 0)
				checkpoint(op,
					   "index=%lu result=%s err=%s region=0x%lx done=%lu "
					   "refused=%lu noop=%lu faults=%lu children=%d threads=%d",
					   index, r == 0 ? "ok" : r == -1 ? "refused" : "noop",
					   r == -1 ? errname(e) : "-", (unsigned long)region, done,
					   refused, noop, churn_faults, nchildren, nthreads + 1);
		}
		index++;
	}
	fclose(f);
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
	if (!strcmp(scenario, "zoo"))
		return zoo();
	if (!strcmp(scenario, "maps"))
		return many_maps(n > 0 ? n : 3000);
	if (!strcmp(scenario, "threads"))
		return many_threads(n > 0 ? n : 8);
	if (!strcmp(scenario, "stress"))
		return stress(n > 0 ? n : 3600);
	if (!strcmp(scenario, "idle"))
		return idle();
	if (!strcmp(scenario, "churn") && argc > 2)
		return churn_main(argv[2], argc > 3 ? atoi(argv[3]) : 1);
	fprintf(stderr, "usage: app heap|stack|demand|mmap|thread|zoo|maps N|threads N|stress S|idle|churn FILE [EVERY]\n");
	return 2;
}
