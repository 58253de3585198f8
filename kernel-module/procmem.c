// SPDX-License-Identifier: GPL-2.0
/*
 * procmem - print the memory layout of one process to the kernel log.
 *
 * Load with: insmod procmem.ko pid=N [va=0xADDR] [walk=1] [tag=STRING]
 *                               [find=pid|list]
 *
 * Every line is one record: "procmem: <record> key=value key=value ...".
 * See FORMAT.md for the records and their fields.
 *
 * The records are collected into a buffer the module owns while the
 * target's mmap lock is held, then printed with printk after the lock is
 * dropped, and kept readable in /proc/procmem until the module is removed:
 * the same lines, byte for byte, even when the kernel log overflows.
 *
 * The page tables are walked by hand (no page-walk API is exported to
 * modules), but each raw entry is decoded with the kernel's own inline
 * helpers (pte_present(), pte_pfn(), pmd_present(), pte_to_swp_entry(),
 * ...) and counted with the rules of fs/proc/task_mmu.c (smaps).
 */

#define PM_PREFIX "procmem: "
#define pr_fmt(fmt) PM_PREFIX fmt

#include <linux/version.h>
#include <linux/module.h>
#include <linux/moduleparam.h>
#include <linux/kernel.h>
#include <linux/init.h>
#include <linux/errno.h>
#include <linux/slab.h>
#include <linux/sched.h>
#include <linux/pid.h>
#include <linux/mm.h>
#include <linux/mm_types.h>
#include <linux/highmem.h>
#include <linux/uaccess.h>
#include <linux/dcache.h>
#include <linux/fs.h>
#include <linux/path.h>
#include <linux/err.h>
#include <linux/rcupdate.h>
#include <linux/utsname.h>
#include <linux/limits.h>
#include <linux/string.h>
#include <linux/ktime.h>
#include <linux/swap.h>
#include <linux/swapops.h>
#include <linux/huge_mm.h>
#include <linux/hugetlb.h>
#include <linux/proc_fs.h>
#include <linux/vmalloc.h>
#include <asm/page.h>
#include <asm/pgtable.h>
#include <asm/processor.h>
#include <asm/cpufeature.h>

#if LINUX_VERSION_CODE >= KERNEL_VERSION(4, 11, 0)
#include <linux/sched/mm.h>
#include <linux/sched/task.h>
#include <linux/sched/signal.h>		/* for_each_process(), next_task() */
#endif

#ifndef CONFIG_X86_64
#error "procmem supports x86_64 only"
#endif

/*
 * x86_64 paging geometry. Every table is one 4 KiB page of 512 8-byte
 * entries, so each level decodes PM_LEVEL_BITS address bits above the
 * 12-bit page offset: pte 12, pmd 21, pud 30, then the top level at 39
 * (4 levels: the pgd) or 48 (5 levels: a pgd above the p4d at 39).
 */
#define PM_LEVEL_BITS	9
#define PM_ENTRIES	(1 << PM_LEVEL_BITS)
#define PM_USER_ENTRIES	(PM_ENTRIES / 2)	/* lower half of the top level */
#define PM_MAX_LEVELS	5
#define PM_PTE_SHIFT	12			/* PAGE_SHIFT, 4 KiB pages */
#define PM_PMD_SHIFT	(PM_PTE_SHIFT + PM_LEVEL_BITS)	/* 21 */
#define PM_PUD_SHIFT	(PM_PMD_SHIFT + PM_LEVEL_BITS)	/* 30 */
#define PM_P4D_SHIFT	(PM_PUD_SHIFT + PM_LEVEL_BITS)	/* 39 */
#define PM_TOP_SHIFT_L4	PM_P4D_SHIFT			/* 39 */
#define PM_TOP_SHIFT_L5	(PM_P4D_SHIFT + PM_LEVEL_BITS)	/* 48 */

/* ------------------------------------------------------------------ */
/* Kernel version differences: all of them live in this block.        */
/* ------------------------------------------------------------------ */

/*
 * Take the mmap lock for reading so that a fatal signal (kill -9 on a
 * stuck insmod) ends the wait: mmap_read_lock_killable() since 5.8,
 * down_read_killable() on mmap_sem since 4.15. Before 4.15 there is no
 * killable rwsem read lock, so poll down_read_trylock() and sleep a tick
 * between tries, giving up on a fatal signal. 0 or -EINTR.
 */
static inline int pm_mmap_read_lock_killable(struct mm_struct *mm)
{
#if LINUX_VERSION_CODE >= KERNEL_VERSION(5, 8, 0)
	return mmap_read_lock_killable(mm);
#elif LINUX_VERSION_CODE >= KERNEL_VERSION(4, 15, 0)
	return down_read_killable(&mm->mmap_sem);
#else
	while (!down_read_trylock(&mm->mmap_sem)) {
		if (fatal_signal_pending(current))
			return -EINTR;
		schedule_timeout_killable(1);
	}
	return 0;
#endif
}

static inline void pm_mmap_read_unlock(struct mm_struct *mm)
{
#if LINUX_VERSION_CODE >= KERNEL_VERSION(5, 8, 0)
	mmap_read_unlock(mm);
#else
	up_read(&mm->mmap_sem);
#endif
}

/* True when the CPU runs with 5-level paging (LA57). */
static inline bool pm_l5_enabled(void)
{
#if LINUX_VERSION_CODE >= KERNEL_VERSION(4, 18, 0)
	return pgtable_l5_enabled();
#else
	return PGDIR_SHIFT == PM_TOP_SHIFT_L5;
#endif
}

/* True when page-table isolation is on (the PGD is then two pages). */
static inline bool pm_pti_enabled(void)
{
#if defined(X86_FEATURE_PTI)
	return boot_cpu_has(X86_FEATURE_PTI);
#elif defined(X86_FEATURE_KAISER)
	return boot_cpu_has(X86_FEATURE_KAISER);
#else
	return false;
#endif
}

/* Speculative reference on the (compound) page: no-op if it is free. */
static inline struct page *pm_page_tryget(struct page *page)
{
#if LINUX_VERSION_CODE >= KERNEL_VERSION(5, 16, 0)
	struct folio *folio = page_folio(page);

	if (!folio_try_get(folio))
		return NULL;
	if (unlikely(page_folio(page) != folio)) {
		folio_put(folio);
		return NULL;
	}
	return folio_page(folio, 0);
#else
	struct page *head = compound_head(page);

	if (!get_page_unless_zero(head))
		return NULL;
	if (unlikely(compound_head(page) != head)) {
		put_page(head);
		return NULL;
	}
	return head;
#endif
}

static inline void pm_page_put(struct page *head)
{
#if LINUX_VERSION_CODE >= KERNEL_VERSION(5, 16, 0)
	folio_put(page_folio(head));
#else
	put_page(head);
#endif
}

/* Kernel-to-kernel copy that returns an error instead of oopsing. */
static inline long pm_copy_nofault(void *dst, const void *src, size_t len)
{
#if LINUX_VERSION_CODE >= KERNEL_VERSION(5, 8, 0)
	return copy_from_kernel_nofault(dst, src, len);
#else
	return probe_kernel_read(dst, src, len);
#endif
}

/* The path /proc/PID/maps shows for a mapped file (overlayfs aware). */
static inline const struct path *pm_file_path(struct file *file)
{
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 8, 0)
	return file_user_path(file);
#else
	return &file->f_path;
#endif
}

/*
 * One rss counter, exactly. Since 6.2 the counters are per-CPU and a plain
 * read may lag by a batch per CPU, so sum them as /proc/PID/status does.
 */
static inline unsigned long pm_mm_counter(struct mm_struct *mm, int member)
{
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 2, 0)
	return (unsigned long)percpu_counter_sum_positive(&mm->rss_stat[member]);
#else
	return (unsigned long)get_mm_counter(mm, member);
#endif
}

/* Shared memory resident pages, or -1 where the counter does not exist. */
static inline long pm_rss_shmem(struct mm_struct *mm)
{
#if LINUX_VERSION_CODE >= KERNEL_VERSION(4, 5, 0)
	return (long)pm_mm_counter(mm, MM_SHMEMPAGES);
#else
	return -1;
#endif
}

/* mm->data_vm, or -1 where the field does not exist. */
static inline long pm_data_vm(struct mm_struct *mm)
{
#if LINUX_VERSION_CODE >= KERNEL_VERSION(4, 5, 0)
	return (long)mm->data_vm;
#else
	return -1;
#endif
}

static inline unsigned long pm_pinned_vm(struct mm_struct *mm)
{
#if LINUX_VERSION_CODE >= KERNEL_VERSION(5, 1, 0)
	return (unsigned long)atomic64_read(&mm->pinned_vm);
#else
	return mm->pinned_vm;
#endif
}

/*
 * Newer kernels describe non-present entries as "software leaf entries"
 * (include/linux/leafops.h, softleaf_*()) and drop the older swapops.h
 * predicates (non_swap_entry(), is_swap_pte(), ...); use the header's
 * presence rather than a version number to pick the API.
 */
#if defined(__has_include)
#if __has_include(<linux/leafops.h>)
#include <linux/leafops.h>
#define PM_HAVE_SOFTLEAF 1
#endif
#endif

/* What smaps makes of a non-present, non-empty PTE (pm_count_absent()). */
enum pm_absent {
	PM_ABSENT_OTHER,	/* pte marker etc.: counted nowhere */
	PM_ABSENT_SWAP,		/* a real swap entry: Swap */
	PM_ABSENT_PAGE,		/* a pfn entry, its page still there: Rss */
};

/*
 * fs/proc/task_mmu.c smaps_pte_entry(): !non_swap_entry() is swap; a pfn
 * swap entry (is_pfn_swap_entry(), 5.14+: migration, device-private,
 * device-exclusive, later hwpoison; migration and device-private since
 * 4.14; migration only before) has a page that is counted in Rss.
 */
static inline enum pm_absent pm_pte_absent(pte_t pte)
{
#ifdef PM_HAVE_SOFTLEAF
	softleaf_t entry = softleaf_from_pte(pte);

	if (softleaf_is_swap(entry))
		return PM_ABSENT_SWAP;
	return softleaf_has_pfn(entry) ? PM_ABSENT_PAGE : PM_ABSENT_OTHER;
#else
	swp_entry_t entry = pte_to_swp_entry(pte);
	bool page;

	if (!non_swap_entry(entry))
		return PM_ABSENT_SWAP;
#if LINUX_VERSION_CODE >= KERNEL_VERSION(5, 14, 0)
	page = is_pfn_swap_entry(entry);
#elif LINUX_VERSION_CODE >= KERNEL_VERSION(4, 14, 0)
	page = is_migration_entry(entry) || is_device_private_entry(entry);
#else
	page = is_migration_entry(entry);
#endif
	return page ? PM_ABSENT_PAGE : PM_ABSENT_OTHER;
#endif
}

/*
 * A non-present PMD that smaps counts as the whole THP: a PMD migration
 * entry (fs/proc/task_mmu.c smaps_pmd_entry, with THP migration, 4.14+).
 */
static inline bool pm_pmd_is_migration(pmd_t pmd)
{
#ifdef PM_HAVE_SOFTLEAF
	return softleaf_is_migration(softleaf_from_pmd(pmd));
#elif LINUX_VERSION_CODE >= KERNEL_VERSION(4, 14, 0)
	return thp_migration_supported() &&
	       is_migration_entry(pmd_to_swp_entry(pmd));
#else
	return false;
#endif
}

/*
 * The name prctl(PR_SET_VMA, PR_SET_VMA_ANON_NAME) gave a VMA, or NULL:
 * anon_vma_name(vma)->name (5.17+, CONFIG_ANON_VMA_NAME). anon_vma_name()
 * is not exported; it only asserts the mmap lock (held here) and returns
 * vma->anon_name. Before 6.2 that field shares a union with the i_mmap
 * node and is only valid when vm_file is NULL (and maps ignores it for
 * file VMAs); since 6.2 a named shared anonymous (shmem) VMA has both, and
 * maps shows it as "[anon_shmem:NAME]".
 */
static inline const char *pm_anon_name(struct vm_area_struct *vma)
{
#if defined(CONFIG_ANON_VMA_NAME) && \
	LINUX_VERSION_CODE >= KERNEL_VERSION(5, 17, 0)
	struct anon_vma_name *an;

#if LINUX_VERSION_CODE < KERNEL_VERSION(6, 2, 0)
	if (vma->vm_file)
		return NULL;
#endif
	an = READ_ONCE(vma->anon_name);
	return an ? an->name : NULL;
#else
	return NULL;
#endif
}

/*
 * The offset column of /proc/PID/maps (fs/proc/task_mmu.c show_map_vma):
 * "if (file) pgoff = ((loff_t)vma->vm_pgoff) << PAGE_SHIFT;", else 0.
 * The same rule on every kernel this module supports (4.4 .. 7.x, and
 * since 2.6.x); only the nommu variant differs.
 */
static inline unsigned long long pm_maps_pgoff(struct vm_area_struct *vma)
{
	if (!vma->vm_file)
		return 0;
	return (unsigned long long)vma->vm_pgoff << PAGE_SHIFT;
}

/*
 * True for a compound page of PMD order that has no mapping at all (not
 * anonymous: anon pages point to their anon_vma; not page cache: those
 * point to their address_space). See pm_is_huge_zero().
 */
static inline bool pm_pmd_page_unmapped(unsigned long pfn)
{
#if LINUX_VERSION_CODE >= KERNEL_VERSION(5, 16, 0)
	struct folio *folio = page_folio(pfn_to_page(pfn));

	return folio_test_large(folio) &&
	       folio_order(folio) == PM_PMD_SHIFT - PAGE_SHIFT &&
	       !READ_ONCE(folio->mapping);
#else
	struct page *page = pfn_to_page(pfn);

	return PageHead(page) &&
	       compound_order(page) == PM_PMD_SHIFT - PAGE_SHIFT &&
	       !READ_ONCE(page->mapping);
#endif
}

/* A buffer that may be large: kvmalloc() since 4.12, vmalloc() before. */
static inline void *pm_kvmalloc(size_t size)
{
#if LINUX_VERSION_CODE >= KERNEL_VERSION(4, 12, 0)
	return kvmalloc(size, GFP_KERNEL);
#else
	return vmalloc(size);
#endif
}

/*
 * /proc/procmem: procfs takes a struct proc_ops since 5.6 and a struct
 * file_operations before (which also needs .owner; proc_ops has none,
 * proc_remove() waits for readers instead).
 */
static ssize_t pm_proc_read(struct file *file, char __user *ubuf,
			    size_t count, loff_t *ppos);

#if LINUX_VERSION_CODE >= KERNEL_VERSION(5, 6, 0)
static const struct proc_ops pm_proc_ops = {
	.proc_read = pm_proc_read,
	.proc_lseek = default_llseek,
};
#else
static const struct file_operations pm_proc_ops = {
	.owner = THIS_MODULE,
	.read = pm_proc_read,
	.llseek = default_llseek,
};
#endif

static inline struct proc_dir_entry *pm_proc_create(const char *name)
{
	return proc_create(name, 0400, NULL, &pm_proc_ops);
}

/*
 * The pud entry for addr below a present pgd entry, or NULL when the p4d
 * level (5-level paging, 4.12+; folded into the pgd with 4 levels) has no
 * table there.
 */
static inline pud_t *pm_pud_offset(pgd_t *pgd, unsigned long addr)
{
#if LINUX_VERSION_CODE >= KERNEL_VERSION(4, 12, 0)
	p4d_t *p4d = p4d_offset(pgd, addr);

	if (!p4d_present(*p4d))
		return NULL;
	return pud_offset(p4d, addr);
#else
	return pud_offset(pgd, addr);
#endif
}

/* A hugetlb entry as the kernel reads it: huge_ptep_get() gained mm, addr in 6.11. */
static inline pte_t pm_huge_ptep_get(struct mm_struct *mm, unsigned long addr,
				     pte_t *ptep)
{
#if !defined(CONFIG_HUGETLB_PAGE)
	return *ptep;	/* never called: no hugetlb VMAs without hugetlb */
#elif LINUX_VERSION_CODE >= KERNEL_VERSION(6, 11, 0)
	return huge_ptep_get(mm, addr, ptep);
#else
	return huge_ptep_get(ptep);
#endif
}

/* The huge page size of a hugetlb VMA (huge_page_size(hstate_vma())). */
static inline unsigned long pm_huge_page_size(struct vm_area_struct *vma)
{
#ifdef CONFIG_HUGETLB_PAGE
	return huge_page_size(hstate_vma(vma));
#else
	return PAGE_SIZE;
#endif
}

/* ------------------------------------------------------------------ */
/* End of the version block.                                          */
/* ------------------------------------------------------------------ */

/* Raw x86_64 entry bits, for the pgd dump and the flag names only. */
#define PM_P		(1ULL << 0)
#define PM_NX		(1ULL << 63)
#define PM_ADDR_MASK	0x000ffffffffff000ULL
#define PM_ESC_MAX	200
#define PM_BYTES	16

static int pid;
module_param(pid, int, 0444);
MODULE_PARM_DESC(pid, "process id to describe (required)");

static unsigned long va;
static bool va_given;

static int pm_set_va(const char *val, const struct kernel_param *kp)
{
	int ret = param_set_ulong(val, kp);

	if (!ret)
		va_given = true;
	return ret;
}

static const struct kernel_param_ops pm_va_ops = {
	.set = pm_set_va,
	.get = param_get_ulong,
};
module_param_cb(va, &pm_va_ops, &va, 0444);
MODULE_PARM_DESC(va, "user virtual address to translate (optional)");

static bool walk;
module_param(walk, bool, 0444);
MODULE_PARM_DESC(walk, "count present page-table entries per level");

static char *tag;
module_param(tag, charp, 0444);
MODULE_PARM_DESC(tag, "free-form label echoed in begin/end/unload");

/*
 * How the task is found (find=). "pid", the pid hash, is the default: O(1),
 * in the caller's pid namespace, and it finds threads too. "list" is the
 * assignment's walk of the process list. See pm_find_by_pid() and
 * pm_find_by_list().
 */
enum pm_find {
	PM_FIND_PID,
	PM_FIND_LIST,
};

static const char * const pm_find_names[] = {
	[PM_FIND_PID] = "pid",
	[PM_FIND_LIST] = "list",
};

static char *pm_find_arg;
module_param_named(find, pm_find_arg, charp, 0444);
MODULE_PARM_DESC(find, "how to find the task: pid (default, pid hash) or list (walk the process list)");

static enum pm_find pm_find_mode;

/* Escaped tag, kept for the unload record. */
static char pm_tag[PM_ESC_MAX + 1];
static bool pm_tag_trunc;

/*
 * The record of this load: every line, "procmem: ...\n", as printk prints
 * it and /proc/procmem returns it. Written only during init (before the
 * proc file exists), read-only afterwards, freed at unload.
 */
#define PM_BUF_INIT	(64 * 1024)
#define PM_BUF_MAX	(8 * 1024 * 1024)
#define PM_LINE_MAX	1024	/* printk's own limit; ours stay far below */
#define PM_BUF_RESERVE	(2 * PM_LINE_MAX)	/* the closing error and end */

struct pm_buf {
	char *data;
	size_t len;
	size_t size;
	unsigned int lines;
	unsigned int dropped;	/* lines that did not fit */
	bool nomem;		/* ... because an allocation failed */
};

static struct pm_buf pm_out;
static struct proc_dir_entry *pm_proc;

struct pm_ctx {
	struct mm_struct *mm;
	const u64 *pgd;
	unsigned long zero_pfn;
	int top_shift;
	u64 find_ns;		/* time taken by the find= lookup */
	bool l5;
	bool pti;
	char esc[PM_ESC_MAX + 1];
	char release[PM_ESC_MAX + 1];
	char flags[96];
	char path[PATH_MAX];
};

struct pm_count {
	unsigned long present;
	unsigned long rss;
	unsigned long swap;	/* swap entries, as smaps' Swap */
	unsigned long hugetlb;	/* hugetlb pages, not in rss */
	unsigned long level[PM_MAX_LEVELS];
	unsigned long huge_pmd;
	unsigned long huge_pud;
	bool normal_only;
	bool check_vma;		/* descend only where a VMA lives */
};

/* ---- the record buffer ---------------------------------------------- */

static int pm_buf_init(struct pm_buf *b)
{
	memset(b, 0, sizeof(*b));
	b->data = pm_kvmalloc(PM_BUF_INIT);
	if (!b->data)
		return -ENOMEM;
	b->size = PM_BUF_INIT;
	return 0;
}

static void pm_buf_free(struct pm_buf *b)
{
	kvfree(b->data);
	memset(b, 0, sizeof(*b));
}

/*
 * Make room for one more line plus PM_BUF_RESERVE, growing the buffer
 * (GFP_KERNEL: allowed under the mmap read lock, which only must not be
 * held across a fault on user memory) up to PM_BUF_MAX. The reserve is
 * always allocated, so the closing lines never need an allocation.
 */
static bool pm_buf_room(struct pm_buf *b)
{
	size_t need = b->len + PM_LINE_MAX + PM_BUF_RESERVE;
	size_t size;
	char *data;

	if (need <= b->size)
		return true;
	if (need > PM_BUF_MAX)
		return false;
	size = clamp_t(size_t, b->size * 2, need, PM_BUF_MAX);
	data = pm_kvmalloc(size);
	if (!data) {
		b->nomem = true;
		return false;
	}
	memcpy(data, b->data, b->len);
	kvfree(b->data);
	b->data = data;
	b->size = size;
	return true;
}

/*
 * Append "procmem: <fmt>\n". A line that finds no room is dropped and
 * counted, and so is every later one except the closing lines (@closing),
 * which use the reserve.
 */
static void pm_vappend(struct pm_buf *b, bool closing, const char *fmt,
		       va_list args)
{
	size_t plen = strlen(PM_PREFIX);
	char *line;
	int n;

	if (!closing && (b->dropped || !pm_buf_room(b))) {
		b->dropped++;
		return;
	}
	if (b->len + PM_LINE_MAX > b->size)
		return;		/* cannot happen: the reserve is kept */
	line = b->data + b->len;
	memcpy(line, PM_PREFIX, plen);
	n = vsnprintf(line + plen, PM_LINE_MAX - plen - 1, fmt, args);
	n = min_t(int, n, PM_LINE_MAX - plen - 2);
	line[plen + n] = '\n';
	b->len += plen + n + 1;
	b->lines++;
}

static __printf(2, 3) void pm_append(bool closing, const char *fmt, ...)
{
	va_list args;

	va_start(args, fmt);
	pm_vappend(&pm_out, closing, fmt, args);
	va_end(args);
}

/* One record line; see pm_vappend(). */
#define pm_rec(fmt, ...)	pm_append(false, fmt, ##__VA_ARGS__)

static void pm_error(int err, const char *reason)
{
	pm_rec("error tag=%s pid=%d errno=%d reason=%s",
	       pm_tag, pid, err, reason);
}

/*
 * Copy @src to @dst replacing bytes <= 0x20, >= 0x7f, '"' and '\\' by a
 * backslash and three octal digits. Stops before PM_ESC_MAX characters
 * and returns true when the input had to be cut.
 */
static bool pm_escape(char *dst, const char *src)
{
	const unsigned char *s = (const unsigned char *)src;
	size_t n = 0;

	for (; *s; s++) {
		bool plain = *s > 0x20 && *s < 0x7f && *s != '"' && *s != '\\';
		size_t need = plain ? 1 : 4;

		if (n + need > PM_ESC_MAX) {
			dst[n] = '\0';
			return true;
		}
		if (plain)
			dst[n] = *s;
		else
			snprintf(dst + n, 5, "\\%03o", *s);
		n += need;
	}
	dst[n] = '\0';
	return false;
}

static const char *pm_trunc_field(bool truncated)
{
	return truncated ? " truncated=1" : "";
}

/* Render the set bits of a raw entry as "P|RW|US|...", or "-". */
static const char *pm_flag_names(char *buf, size_t len, u64 v)
{
	static const char * const names[] = {
		"P", "RW", "US", "PWT", "PCD", "A", "D", "PS", "G",
		"AVL9", "AVL10", "AVL11",
	};
	size_t n = 0;
	unsigned int i;

	buf[0] = '\0';
	for (i = 0; i < ARRAY_SIZE(names); i++)
		if (v & (1ULL << i))
			n += scnprintf(buf + n, len - n, "%s%s",
				       n ? "|" : "", names[i]);
	if (v & PM_NX)
		n += scnprintf(buf + n, len - n, "%sNX", n ? "|" : "");
	if (!n)
		scnprintf(buf, len, "-");
	return buf;
}

/* ---- raw page-table access ---------------------------------------- */

static inline unsigned int pm_index(unsigned long addr, int shift)
{
	return (addr >> shift) & (PM_ENTRIES - 1);
}

/* Counter slot of a level: 0 pte, 1 pmd, 2 pud, 3 p4d or pgd, 4 pgd. */
static inline int pm_slot(int shift)
{
	return (shift - PM_PTE_SHIFT) / PM_LEVEL_BITS;
}

/* Shift of the level below the one at @shift. */
static inline int pm_lower_shift(int shift)
{
	return shift - PM_LEVEL_BITS;
}

/* Page-table levels in use: 4, or 5 with LA57. */
static inline int pm_levels(const struct pm_ctx *c)
{
	return pm_slot(c->top_shift) + 1;
}

/* Virtual-address width: 48 (4 levels) or 57 (5 levels). */
static inline int pm_va_bits(const struct pm_ctx *c)
{
	return c->top_shift + PM_LEVEL_BITS;
}

/*
 * End of the user half of the address space: what the lower half of the
 * top-level table (entries 0 .. PM_USER_ENTRIES - 1) covers, i.e.
 * PM_USER_ENTRIES << top_shift.
 */
static inline unsigned long pm_user_half_end(const struct pm_ctx *c)
{
	return 1UL << (pm_va_bits(c) - 1);
}

static const char *pm_level_name(const struct pm_ctx *c, int shift)
{
	static const char * const names[PM_MAX_LEVELS] = {
		"pte", "pmd", "pud", "p4d", "pgd"
	};

	if (shift == c->top_shift)
		return "pgd";
	return names[pm_slot(shift)];
}

/*
 * A raw entry as the kernel's own pte_t/pmd_t/pud_t, i.e. what ptep_get()
 * and pmdp_get() return for the value in the table. native_make_*() wraps
 * the value without a paravirt translation (__pte() would convert a pfn
 * to a machine frame under Xen PV, the wrong direction for a value read
 * from a table). The kernel's accessors then apply their own rules:
 * pte_present() is P or PROTNONE, pmd_present() also takes PSE alone (a
 * THP being split), pte_pfn()/pmd_pfn()/pud_pfn() undo the inverted PFN
 * bits of non-present entries (arch/x86/include/asm/pgtable-invert.h) and
 * mask with PTE_PFN_MASK, which leaves out the AMD SME C-bit
 * (physical_mask).
 */
static inline pte_t pm_pte(u64 v)
{
	return native_make_pte(v);
}

static inline pmd_t pm_pmd(u64 v)
{
	return native_make_pmd(v);
}

static inline pud_t pm_pud(u64 v)
{
	return native_make_pud(v);
}

static inline bool pm_is_leaf(u64 v, int shift)
{
	if (shift == PM_PTE_SHIFT)
		return true;
	if (shift == PM_PMD_SHIFT)
		return pmd_flags(pm_pmd(v)) & _PAGE_PSE;
	if (shift == PM_PUD_SHIFT)
		return pud_flags(pm_pud(v)) & _PAGE_PSE;
	return false;
}

/*
 * Present test with the kernel's helpers: pte_present() (P or PROTNONE:
 * PROT_NONE and NUMA-hinting entries count), pmd_present() (P, PROTNONE,
 * or PSE alone while split_huge_pmd() has the entry invalidated). A 1 GiB
 * hugetlb leaf is a huge pte, so pte_present() as in smaps_hugetlb_range().
 */
static inline bool pm_present(u64 v, int shift)
{
	if (shift == PM_PTE_SHIFT)
		return pte_present(pm_pte(v));
	if (shift == PM_PMD_SHIFT)
		return pmd_present(pm_pmd(v));
	if (shift == PM_PUD_SHIFT && (v & _PAGE_PSE))
		return pte_present(pm_pte(v));
	return v & _PAGE_PRESENT;
}

/*
 * Kernel virtual address of the table a present non-leaf entry points to,
 * or NULL. The mask is the kernel's PTE_PFN_MASK (as pmd_page_vaddr() and
 * pud_pgtable() use for a non-PSE entry), so the SME C-bit is dropped.
 */
static const u64 *pm_next_table(u64 v)
{
	u64 phys = v & PTE_PFN_MASK;

	if (!pfn_valid(phys >> PAGE_SHIFT))
		return NULL;
	return (const u64 *)__va(phys);
}

/* First frame of a present leaf: pte_pfn(), pmd_pfn() or pud_pfn(). */
static inline unsigned long pm_leaf_pfn(u64 v, int shift)
{
	if (shift == PM_PTE_SHIFT)
		return pte_pfn(pm_pte(v));
	if (shift == PM_PMD_SHIFT)
		return pmd_pfn(pm_pmd(v));
	return pud_pfn(pm_pud(v));
}

/* ---- range walker (rss, present and per-level counts) -------------- */

static void pm_walk_range(struct pm_ctx *c, struct pm_count *cnt,
			  const u64 *table, int shift,
			  unsigned long start, unsigned long end);

/*
 * The huge zero page, which read faults map into THP-enabled anonymous
 * memory. mm/memory.c vm_normal_page_pmd() (and before it the FOLL_DUMP
 * case of follow_trans_huge_pmd()) rejects it with is_huge_zero_pmd(), so
 * fs/proc/task_mmu.c smaps_pmd_entry() counts it as 0, like the 4 KiB zero
 * page. is_huge_zero_pmd() reads huge_zero_pfn, which is not exported to
 * modules, so the page is recognised by what sets it apart from every
 * other page a PMD can map into a VMA: a read-only entry for a compound
 * page of PMD order without any mapping (anonymous THPs point to their
 * anon_vma, file and shmem THPs to their address_space). Reading the
 * struct page of a valid pfn is always safe; like the whole lockless walk
 * it may race with an unmap.
 */
static bool pm_is_huge_zero(u64 v, unsigned long pfn)
{
#ifdef CONFIG_TRANSPARENT_HUGEPAGE
	return !(v & _PAGE_RW) && pm_pmd_page_unmapped(pfn);
#else
	return false;
#endif
}

/*
 * Whether smaps counts a present leaf: the rule of mm/memory.c
 * vm_normal_page() and vm_normal_page_pmd() as fs/proc/task_mmu.c
 * smaps_pte_entry() / smaps_pmd_entry() / smaps_hugetlb_range() apply it.
 * Not a special entry (x86 marks PFN-map entries _PAGE_SPECIAL), a frame
 * with a struct page, not the zero page, not the huge zero page.
 */
static bool pm_normal_leaf(const struct pm_ctx *c, u64 v, int shift,
			   unsigned long pfn)
{
	if ((v & _PAGE_SPECIAL) || !pfn_valid(pfn))
		return false;
	if (shift == PM_PTE_SHIFT)
		return pfn != c->zero_pfn;
	if (shift == PM_PMD_SHIFT)
		return !pm_is_huge_zero(v, pfn);
	return true;
}

static void pm_count_leaf(struct pm_ctx *c, struct pm_count *cnt, u64 v,
			  int shift, unsigned long start, unsigned long end)
{
	unsigned long pages = (end - start) >> PAGE_SHIFT;

	cnt->present += pages;
	if (shift == PM_PMD_SHIFT)
		cnt->huge_pmd++;
	else if (shift == PM_PUD_SHIFT)
		cnt->huge_pud++;
	if (pm_normal_leaf(c, v, shift, pm_leaf_pfn(v, shift)))
		cnt->rss += pages;
}

/*
 * A non-present, non-empty entry. fs/proc/task_mmu.c smaps_pte_entry():
 * a real swap entry adds to Swap; a migration, device-private (and on
 * newer kernels device-exclusive, hwpoison) entry still has its page,
 * which is counted in Rss; pte markers count nowhere. smaps_pmd_entry():
 * a PMD migration entry counts the whole THP. (Hugetlb VMAs are counted
 * by pm_count_hugetlb(), not here.)
 */
static void pm_count_absent(struct pm_count *cnt, u64 v, int shift,
			    unsigned long start, unsigned long end)
{
	unsigned long pages = (end - start) >> PAGE_SHIFT;

	if (shift == PM_PTE_SHIFT) {
		if (pte_none(pm_pte(v)))
			return;
		switch (pm_pte_absent(pm_pte(v))) {
		case PM_ABSENT_SWAP:
			cnt->swap += pages;
			break;
		case PM_ABSENT_PAGE:
			cnt->rss += pages;
			break;
		default:
			break;
		}
	} else if (shift == PM_PMD_SHIFT && !pmd_none(pm_pmd(v)) &&
		   pm_pmd_is_migration(pm_pmd(v))) {
		cnt->rss += pages;
	}
}

/* True when some VMA overlaps [start, end). */
static bool pm_range_has_vma(struct mm_struct *mm, unsigned long start,
			     unsigned long end)
{
	struct vm_area_struct *vma = find_vma(mm, start);

	return vma && vma->vm_start < end;
}

static void pm_walk_entry(struct pm_ctx *c, struct pm_count *cnt,
			  const u64 *table, int shift,
			  unsigned long start, unsigned long end)
{
	u64 v = READ_ONCE(table[pm_index(start, shift)]);
	const u64 *next;

	if (!pm_present(v, shift)) {
		pm_count_absent(cnt, v, shift, start, end);
		return;
	}
	cnt->level[pm_slot(shift)]++;
	if (pm_is_leaf(v, shift)) {
		pm_count_leaf(c, cnt, v, shift, start, end);
		return;
	}
	/*
	 * Since munmap() may free page tables after downgrading to the read
	 * lock, only tables that cover a live VMA are known to stay.
	 */
	if (cnt->check_vma && !pm_range_has_vma(c->mm, start, end))
		return;
	next = pm_next_table(v);
	if (next)
		pm_walk_range(c, cnt, next, pm_lower_shift(shift),
			      start, end);
}

/* ---- hugetlb: shared PMD tables --------------------------------------- */

/*
 * Keep huge_pmd_unshare() away from a hugetlb VMA's page tables while they
 * are read. A shared PMD table (CONFIG_ARCH_WANT_HUGE_PMD_SHARE) is linked
 * from the PUDs of every process mapping the same 1 GiB of a hugetlbfs
 * file, and huge_pmd_unshare() clears our PUD and drops our share of the
 * table while only the mmap *read* lock is held (madvise(MADV_DONTNEED)),
 * or without our mmap lock at all (another process truncating or punching
 * the file). It runs with the file's i_mmap_rwsem held for write
 * (i_mmap_assert_write_locked(), 5.7+) and, since 6.1, the hugetlb VMA
 * lock as well. hugetlb_walk() (6.3+; the rule in the comment above
 * huge_pte_offset() in mm/hugetlb.c) lets a walker hold either one for
 * read. hugetlb_vma_lock_read() is not exported to modules, so this takes
 * i_mmap_lock_read(), as rmap_walk_file() does around hugetlb walks (and
 * hugetlb_fault() did from 5.7 to 6.0). Lock order: mmap_lock, then
 * i_mmap_rwsem (mm/rmap.c). Before 5.7 try_to_unmap_one() could unshare
 * under i_mmap_rwsem held for read: the kernel itself raced there.
 */
static struct address_space *pm_hugetlb_lock(struct vm_area_struct *vma)
{
	struct address_space *mapping;

	if (!vma || !is_vm_hugetlb_page(vma) || !vma->vm_file)
		return NULL;
	mapping = vma->vm_file->f_mapping;
	i_mmap_lock_read(mapping);
	return mapping;
}

static void pm_hugetlb_unlock(struct address_space *mapping)
{
	if (mapping)
		i_mmap_unlock_read(mapping);
}

/*
 * For the raw walk (walk=): the lock of the hugetlb VMA that [start, end)
 * of one PUD entry may share a PMD table with. A shared table's 1 GiB lies
 * inside one hugetlb VMA, so that VMA is the first one in the range.
 */
static struct address_space *pm_pud_range_lock(struct mm_struct *mm,
					       unsigned long start,
					       unsigned long end)
{
	struct vm_area_struct *vma = find_vma(mm, start);

	if (!vma || vma->vm_start >= end)
		return NULL;
	return pm_hugetlb_lock(vma);
}

/*
 * mm/hugetlb.c huge_pte_offset() (the generic one x86 uses) with the
 * kernel's inline table helpers, as hugetlb_walk() calls it: the entry of
 * a huge page of size sz (a pud for 1 GiB, a pmd for 2 MiB), or NULL when
 * an upper level has no table. Caller holds pm_hugetlb_lock().
 */
static pte_t *pm_huge_pte_offset(struct mm_struct *mm, unsigned long addr,
				 unsigned long sz)
{
	pgd_t *pgd = pgd_offset(mm, addr);
	pud_t *pud;

	if (!pgd_present(*pgd))
		return NULL;
	pud = pm_pud_offset(pgd, addr);
	if (!pud)
		return NULL;
	if (sz == PUD_SIZE)
		return (pte_t *)pud;
	if (!pud_present(*pud))
		return NULL;
	return (pte_t *)pmd_offset(pud, addr);
}

/* One huge entry, counted as fs/proc/task_mmu.c smaps_hugetlb_range(). */
static void pm_count_huge(struct pm_count *cnt, pte_t pte, unsigned long sz)
{
	unsigned long pages = sz >> PAGE_SHIFT;

	if (pte_none(pte))
		return;
	if (pte_present(pte)) {
		cnt->present += pages;
		if (!pte_special(pte) && pfn_valid(pte_pfn(pte)))
			cnt->hugetlb += pages;
	} else if (pm_pte_absent(pte) == PM_ABSENT_PAGE) {
		cnt->hugetlb += pages;
	}
}

/*
 * A hugetlb VMA is not walked by hand: like walk_hugetlb_range()
 * (mm/pagewalk.c, which feeds smaps_hugetlb_range()), each huge page's
 * entry is found with huge_pte_offset() and read with huge_ptep_get(),
 * under the lock of pm_hugetlb_lock().
 */
static void pm_count_hugetlb(struct pm_ctx *c, struct pm_count *cnt,
			     struct vm_area_struct *vma)
{
	unsigned long sz = pm_huge_page_size(vma);
	struct address_space *mapping = pm_hugetlb_lock(vma);
	unsigned long addr;
	pte_t *ptep;

	for (addr = vma->vm_start; addr < vma->vm_end; addr += sz) {
		ptep = pm_huge_pte_offset(c->mm, addr, sz);
		if (ptep)
			pm_count_huge(cnt, pm_huge_ptep_get(c->mm, addr, ptep),
				      sz);
	}
	pm_hugetlb_unlock(mapping);
}

/* Walk [start, end) of one table level; end may be 0 for "top of space". */
static void pm_walk_range(struct pm_ctx *c, struct pm_count *cnt,
			  const u64 *table, int shift,
			  unsigned long start, unsigned long end)
{
	struct address_space *mapping;
	unsigned long addr, next;

	for (addr = start; addr < end; addr = next) {
		next = (addr | ((1UL << shift) - 1)) + 1;
		if (next > end || next == 0)
			next = end;
		if (shift == PM_PMD_SHIFT) {
			/* PTE tables may be freed by RCU (khugepaged collapse). */
			rcu_read_lock();
			pm_walk_entry(c, cnt, table, shift, addr, next);
			rcu_read_unlock();
		} else if (shift == PM_PUD_SHIFT) {
			/* The PUD entry is read under the lock, see above. */
			mapping = pm_pud_range_lock(c->mm, addr, next);
			pm_walk_entry(c, cnt, table, shift, addr, next);
			pm_hugetlb_unlock(mapping);
			cond_resched();
		} else {
			pm_walk_entry(c, cnt, table, shift, addr, next);
		}
	}
}

/* ---- records -------------------------------------------------------- */

static void pm_print_begin(struct pm_ctx *c, struct task_struct *task)
{
	char comm[TASK_COMM_LEN];
	bool trunc;

	get_task_comm(comm, task);
	trunc = pm_escape(c->esc, comm) || pm_tag_trunc;
	pm_escape(c->release, utsname()->release);
	pm_rec("begin tag=%s pid=%d comm=%s kernel=%s page_size=%lu levels=%d pti=%d va_bits=%d task_size=0x%lx find=%s find_ns=%llu%s",
	       pm_tag, pid, c->esc, c->release, PAGE_SIZE,
	       pm_levels(c), c->pti ? 1 : 0, pm_va_bits(c),
	       c->mm->task_size, pm_find_names[pm_find_mode],
	       (unsigned long long)c->find_ns, pm_trunc_field(trunc));
}

static void pm_region(const char *name, unsigned long start,
		      unsigned long end)
{
	pm_rec("region name=%s start=0x%lx end=0x%lx size=%lu",
	       name, start, end, end >= start ? end - start : 0);
}

static void pm_print_regions(struct pm_ctx *c)
{
	struct mm_struct *mm = c->mm;
	struct vm_area_struct *vma;
	unsigned long ss = mm->start_stack;
	unsigned long s = 0, e = 0;

	pm_region("code", mm->start_code, mm->end_code);
	pm_region("data", mm->start_data, mm->end_data);
	pm_region("heap", mm->start_brk, mm->brk);
	vma = find_vma(mm, ss);
	if (vma && vma->vm_start <= ss) {
		s = vma->vm_start;
		e = vma->vm_end;
	}
	pm_rec("region name=stack start=0x%lx end=0x%lx size=%lu start_stack=0x%lx",
	       s, e, e - s, ss);
	pm_region("args", mm->arg_start, mm->arg_end);
	pm_region("env", mm->env_start, mm->env_end);
}

/* The name a mapping gives itself ([vdso], [vvar], ...), or NULL. */
static const char *pm_special_name(struct vm_area_struct *vma)
{
	if (vma->vm_ops && vma->vm_ops->name)
		return vma->vm_ops->name(vma);
	return NULL;
}

/*
 * Name of a VMA as /proc/PID/maps shows it, escaped into c->esc; the order
 * of fs/proc/task_mmu.c show_map_vma() (get_vma_name() since 6.11): the
 * file path (or "[anon_shmem:NAME]" for named shared anonymous memory,
 * 6.2+), vm_ops->name(), [heap], [stack], then "[anon:NAME]" for a VMA
 * named with prctl(PR_SET_VMA_ANON_NAME) (5.17+). The gate VMA
 * ([vsyscall]) is not in the VMA tree and is not reported.
 */
static bool pm_vma_name(struct pm_ctx *c, struct vm_area_struct *vma,
			const char **kind)
{
	struct mm_struct *mm = c->mm;
	const char *anon = pm_anon_name(vma);
	const char *name;

	if (vma->vm_file) {
		*kind = "file";
		if (anon) {
			snprintf(c->path, sizeof(c->path), "[anon_shmem:%s]",
				 anon);
			return pm_escape(c->esc, c->path);
		}
		name = d_path(pm_file_path(vma->vm_file), c->path,
			      sizeof(c->path));
		if (IS_ERR(name))
			name = "[d_path_error]";
		return pm_escape(c->esc, name);
	}
	name = pm_special_name(vma);
	if (name) {
		*kind = "special";
	} else if (vma->vm_start <= mm->brk && vma->vm_end >= mm->start_brk) {
		name = "[heap]";
		*kind = "heap";
	} else if (vma->vm_start <= mm->start_stack &&
		   vma->vm_end >= mm->start_stack) {
		name = "[stack]";
		*kind = "stack";
	} else if (anon) {
		snprintf(c->path, sizeof(c->path), "[anon:%s]", anon);
		name = c->path;
		*kind = "anon";
	} else {
		name = "";
		*kind = "anon";
	}
	return pm_escape(c->esc, name);
}

static void pm_print_vma(struct pm_ctx *c, struct vm_area_struct *vma,
			 unsigned int idx)
{
	unsigned long flags = (unsigned long)vma->vm_flags;
	struct pm_count cnt = { 0 };
	const char *kind;
	char perms[5];
	bool trunc;

	perms[0] = (flags & VM_READ) ? 'r' : '-';
	perms[1] = (flags & VM_WRITE) ? 'w' : '-';
	perms[2] = (flags & VM_EXEC) ? 'x' : '-';
	perms[3] = (flags & VM_MAYSHARE) ? 's' : 'p';
	perms[4] = '\0';

	/* smaps never adds hugetlb pages to Rss (smaps_hugetlb_range()). */
	if (flags & VM_HUGETLB)
		pm_count_hugetlb(c, &cnt, vma);
	else
		pm_walk_range(c, &cnt, c->pgd, c->top_shift,
			      vma->vm_start, vma->vm_end);

	trunc = pm_vma_name(c, vma, &kind);
	pm_rec("vma idx=%u start=0x%lx end=0x%lx size=%lu perms=%s pgoff=0x%llx flags=0x%lx rss=%lu present=%lu file=%s kind=%s swap=%lu hugetlb=%lu%s",
	       idx, vma->vm_start, vma->vm_end, vma->vm_end - vma->vm_start,
	       perms, pm_maps_pgoff(vma), flags, cnt.rss, cnt.present,
	       c->esc, kind, cnt.swap, cnt.hugetlb, pm_trunc_field(trunc));
}

static void pm_print_vmas(struct pm_ctx *c)
{
	struct vm_area_struct *vma;
	unsigned int idx = 0;

	for (vma = find_vma(c->mm, 0); vma;
	     vma = find_vma(c->mm, vma->vm_end)) {
		pm_print_vma(c, vma, idx++);
		cond_resched();
	}
}

/* Format " name=N" into buf, or nothing when val < 0 (field absent). */
static const char *pm_opt(char *buf, size_t len, const char *name, long val)
{
	buf[0] = '\0';
	if (val >= 0)
		snprintf(buf, len, " %s=%ld", name, val);
	return buf;
}

static void pm_print_counters(struct pm_ctx *c)
{
	struct mm_struct *mm = c->mm;
	unsigned long file = pm_mm_counter(mm, MM_FILEPAGES);
	unsigned long anon = pm_mm_counter(mm, MM_ANONPAGES);
	long shm = pm_rss_shmem(mm);
	unsigned long rss = file + anon + (shm > 0 ? shm : 0);
	char shmem[40], data[40];

	/*
	 * get_mm_hiwater_rss() is max(hiwater_rss, get_mm_rss()), and since
	 * 6.2 get_mm_rss() is the approximate per-CPU read, which can lag the
	 * summed rss above: take the max with that too, so hiwater_rss is
	 * never below rss (VmHWM >= VmRSS, as fs/proc/task_mmu.c task_mem()
	 * keeps it).
	 */
	pm_rec("counters rss=%lu rss_file=%lu rss_anon=%lu%s swap=%lu total_vm=%lu locked_vm=%lu pinned_vm=%lu%s exec_vm=%lu stack_vm=%lu map_count=%d hiwater_rss=%lu",
	       rss, file, anon,
	       pm_opt(shmem, sizeof(shmem), "rss_shmem", shm),
	       pm_mm_counter(mm, MM_SWAPENTS),
	       mm->total_vm, mm->locked_vm, pm_pinned_vm(mm),
	       pm_opt(data, sizeof(data), "data_vm", pm_data_vm(mm)),
	       mm->exec_vm, mm->stack_vm, mm->map_count,
	       max_t(unsigned long, get_mm_hiwater_rss(mm), rss));
}

/* First virtual address covered by top-level entry idx (sign-extended). */
static unsigned long pm_top_va(const struct pm_ctx *c, unsigned int idx)
{
	unsigned long addr = (unsigned long)idx << c->top_shift;

	if (idx >= PM_USER_ENTRIES)
		addr |= ~((1UL << pm_va_bits(c)) - 1);
	return addr;
}

static void pm_dump_pgd(struct pm_ctx *c, const u64 *pgd, const char *name)
{
	unsigned int i, present = 0, user = 0;
	unsigned long start;
	u64 v;

	pm_rec("pgd table=%s pa=0x%lx entries=%d",
	       name, (unsigned long)__pa(pgd), PM_ENTRIES);
	for (i = 0; i < PM_ENTRIES; i++) {
		v = READ_ONCE(pgd[i]);
		if (!(v & PM_P))
			continue;
		present++;
		if (i < PM_USER_ENTRIES)
			user++;
		start = pm_top_va(c, i);
		pm_rec("pgde table=%s idx=%u va_start=0x%lx va_end=0x%lx value=0x%016llx next_pa=0x%llx flags=%s",
		       name, i, start, start + ((1UL << c->top_shift) - 1),
		       (unsigned long long)v,
		       (unsigned long long)(v & PM_ADDR_MASK),
		       pm_flag_names(c->flags, sizeof(c->flags), v));
	}
	pm_rec("pgd_summary table=%s present=%u user=%u kernel=%u",
	       name, present, user, present - user);
}

static void pm_print_walk(struct pm_ctx *c)
{
	struct pm_count cnt = { .check_vma = true };
	unsigned long end = pm_user_half_end(c);
	int top = pm_slot(c->top_shift);
	char p4d[40];

	pm_walk_range(c, &cnt, c->pgd, c->top_shift, 0, end);
	pm_opt(p4d, sizeof(p4d), "p4d", c->l5 ? (long)cnt.level[3] : -1);
	pm_rec("walk levels=%d pgd=%lu%s pud=%lu pmd=%lu pte=%lu huge_pmd=%lu huge_pud=%lu",
	       pm_levels(c), cnt.level[top], p4d, cnt.level[2],
	       cnt.level[1], cnt.level[0], cnt.huge_pmd, cnt.huge_pud);
}

/* ---- va translation -------------------------------------------------- */

struct pm_xlate {
	u64 val[PM_MAX_LEVELS];
	unsigned int idx[PM_MAX_LEVELS];
	int shift[PM_MAX_LEVELS];
	int nlev;
	bool present;
	int leaf_shift;
	u64 pa;
	struct page *head;	/* referenced compound head, or NULL */
	struct page *page;	/* the 4 KiB page holding va */
	const char *reason;
};

/*
 * A special leaf has no struct page to read through: pte_special() (x86
 * marks PFN-map and other special entries with _PAGE_SPECIAL, also on
 * PMDs and PUDs, pmd_special() 6.11+), and a ZONE_DEVICE (devmap) entry's
 * page may not be referenced without its pgmap. The vm_normal_page() and
 * GUP-fast rules; VM_PFNMAP/VM_IO and frames without a struct page (also
 * VM_MIXEDMAP ones) are refused by the caller.
 */
static bool pm_leaf_special(u64 v)
{
#ifdef _PAGE_DEVMAP
	if (v & _PAGE_DEVMAP)
		return true;
#endif
	return v & _PAGE_SPECIAL;
}

/*
 * The leaf still maps the frame that was referenced: present, still a
 * leaf, same first pfn. GUP-fast's rule (mm/gup.c gup_pte_range(),
 * gup_fast_pte_range() since 6.9, and the pmd/pud variants): after the
 * speculative reference, read the entry again; if it changed, the page may
 * have been unmapped and freed (and reused) before the reference was
 * taken, so it is not the page this address maps.
 */
static bool pm_leaf_unchanged(const u64 *leaf, u64 old, int shift)
{
	u64 v = READ_ONCE(*leaf);

	return pm_present(v, shift) && pm_is_leaf(v, shift) &&
	       pm_leaf_pfn(v, shift) == pm_leaf_pfn(old, shift);
}

/*
 * Take a reference on the page of the leaf *leaf (value v) under RCU, if it
 * is safe to read, then re-check the leaf; x->head is the reference.
 */
static void pm_xlate_ref(struct vm_area_struct *vma, struct pm_xlate *x,
			 const u64 *leaf, u64 v)
{
	unsigned long pfn = x->pa >> PAGE_SHIFT;

	if (!vma) {
		x->reason = "no_vma";
	} else if (vma->vm_flags & (VM_IO | VM_PFNMAP)) {
		x->reason = "io_or_pfnmap";
	} else if (pm_leaf_special(v)) {
		x->reason = "special";
	} else if (!pfn_valid(pfn)) {
		x->reason = "invalid_pfn";
	} else {
		x->page = pfn_to_page(pfn);
		x->head = pm_page_tryget(x->page);
		if (!x->head) {
			x->reason = "page_ref_failed";
		} else if (!pm_leaf_unchanged(leaf, v, x->leaf_shift)) {
			pm_page_put(x->head);
			x->head = NULL;
			x->reason = "stale";
		}
	}
}

/* Walk every level for addr; entries are collected, not printed. */
static void pm_xlate(struct pm_ctx *c, struct vm_area_struct *vma,
		     unsigned long addr, struct pm_xlate *x)
{
	const u64 *table = c->pgd;
	int shift;
	u64 v;

	x->reason = "not_present";
	rcu_read_lock();
	for (shift = c->top_shift; shift >= PM_PTE_SHIFT;
	     shift = pm_lower_shift(shift)) {
		x->idx[x->nlev] = pm_index(addr, shift);
		x->shift[x->nlev] = shift;
		v = READ_ONCE(table[x->idx[x->nlev]]);
		x->val[x->nlev++] = v;
		if (!pm_present(v, shift))
			break;
		if (!vma) {
			x->reason = "no_vma";
			break;
		}
		if (pm_is_leaf(v, shift)) {
			x->present = true;
			x->leaf_shift = shift;
			x->pa = ((u64)pm_leaf_pfn(v, shift) << PAGE_SHIFT) +
				(addr & ((1UL << shift) - 1));
			x->reason = NULL;
			pm_xlate_ref(vma, x, &table[x->idx[x->nlev - 1]], v);
			break;
		}
		table = pm_next_table(v);
		if (!table) {
			x->reason = "invalid_table";
			break;
		}
	}
	rcu_read_unlock();
}

/*
 * Copy the first bytes of the referenced page; may sleep (kmap), so it runs
 * after rcu_read_unlock(), under the reference pm_xlate_ref() checked.
 */
static bool pm_read_page(struct page *page, u8 *out)
{
	void *kaddr = kmap(page);
	bool ok = !pm_copy_nofault(out, kaddr, PM_BYTES);

	kunmap(page);
	return ok;
}

static void pm_print_frame(struct pm_xlate *x)
{
	u8 bytes[PM_BYTES];

	if (!x->present) {
		pm_rec("va_frame present=0 reason=%s", x->reason);
		return;
	}
	if (x->head) {
		if (!pm_read_page(x->page, bytes))
			x->reason = "read_fault";
		pm_page_put(x->head);
	}
	if (x->reason) {
		pm_rec("va_frame present=1 pfn=0x%llx pa=0x%llx page_size=%lu reason=%s",
		       (unsigned long long)(x->pa >> PAGE_SHIFT),
		       (unsigned long long)x->pa, 1UL << x->leaf_shift,
		       x->reason);
		return;
	}
	pm_rec("va_frame present=1 pfn=0x%llx pa=0x%llx page_size=%lu bytes=%*phN",
	       (unsigned long long)(x->pa >> PAGE_SHIFT),
	       (unsigned long long)x->pa, 1UL << x->leaf_shift,
	       PM_BYTES, bytes);
}

static void pm_print_va(struct pm_ctx *c)
{
	struct vm_area_struct *vma = find_vma(c->mm, va);
	struct address_space *mapping;
	struct pm_xlate x = { 0 };
	int i;

	if (vma && vma->vm_start > va)
		vma = NULL;
	if (vma)
		pm_rec("va addr=0x%lx mapped=1 vma_start=0x%lx vma_end=0x%lx",
		       va, vma->vm_start, vma->vm_end);
	else
		pm_rec("va addr=0x%lx mapped=0", va);

	/* A hugetlb VMA's tables are read under pm_hugetlb_lock(). */
	mapping = pm_hugetlb_lock(vma);
	pm_xlate(c, vma, va, &x);
	pm_hugetlb_unlock(mapping);
	for (i = 0; i < x.nlev; i++)
		pm_rec("va_level level=%s idx=%u value=0x%016llx flags=%s",
		       pm_level_name(c, x.shift[i]), x.idx[i],
		       (unsigned long long)x.val[i],
		       pm_flag_names(c->flags, sizeof(c->flags), x.val[i]));
	pm_print_frame(&x);
}

/*
 * Everything between begin and end; the caller holds the mmap read lock.
 * The records only go into pm_out here: nothing is printed, nothing
 * touches user memory, and the lock is dropped before they are printed.
 */
static void pm_report(struct pm_ctx *c)
{
	pm_print_regions(c);
	pm_print_vmas(c);
	pm_print_counters(c);
	pm_dump_pgd(c, c->pgd, "kernel");
	if (c->pti)
		pm_dump_pgd(c, (const u64 *)((unsigned long)c->pgd | PAGE_SIZE),
			    "user");
	if (walk)
		pm_print_walk(c);
	if (va_given)
		pm_print_va(c);
}

/* ---- setup ----------------------------------------------------------- */

/* Set pm_find_mode from find=; not given means "pid". */
static bool pm_parse_find(void)
{
	unsigned int i;

	if (!pm_find_arg) {
		pm_find_mode = PM_FIND_PID;
		return true;
	}
	for (i = 0; i < ARRAY_SIZE(pm_find_names); i++) {
		if (!strcmp(pm_find_arg, pm_find_names[i])) {
			pm_find_mode = i;
			return true;
		}
	}
	return false;
}

static int pm_check_params(void)
{
	if (pid <= 0) {
		pm_error(-EINVAL, pid ? "bad_pid" : "pid_not_set");
		return -EINVAL;
	}
	if (va_given && (va == 0 || va >= TASK_SIZE_MAX)) {
		pm_error(-EINVAL, "bad_va_not_canonical_user_address");
		return -EINVAL;
	}
	if (!pm_parse_find()) {
		pm_error(-EINVAL, "bad_find");
		return -EINVAL;
	}
	return 0;
}

/*
 * find=pid (the default): the pid hash, the rule of kill(2) and /proc/PID:
 * find_get_pid() looks the number up in the caller's pid namespace, then
 * get_pid_task(PIDTYPE_PID) takes a reference on the task using it. O(1),
 * namespace-correct, and a thread id (TID) finds that thread.
 */
static struct task_struct *pm_find_by_pid(void)
{
	struct pid *p = find_get_pid(pid);
	struct task_struct *task;

	if (!p)
		return NULL;
	task = get_pid_task(p, PIDTYPE_PID);
	put_pid(p);
	return task;
}

/*
 * find=list: the textbook walk of the process list, for_each_process()
 * (next_task() along task->tasks) but started at current instead of
 * init_task. Only thread-group leaders are on that list, so the walk starts
 * at current's leader, which stays on it while current runs; the walk ends
 * when it is back there. A task matches when task_pid_vnr() is pid: its
 * pid in the caller's pid namespace (0 when that namespace cannot see it),
 * the number find_get_pid() looks up; for a leader it equals
 * task_tgid_vnr(). O(processes). As in get_pid_task(), the reference is
 * taken before rcu_read_unlock().
 */
static struct task_struct *pm_find_by_list(void)
{
	struct task_struct *start, *p, *found = NULL;

	rcu_read_lock();
	start = current->group_leader;
	p = start;
	do {
		if (task_pid_vnr(p) == pid) {
			get_task_struct(p);
			found = p;
			break;
		}
		p = next_task(p);
	} while (p != start);
	rcu_read_unlock();
	return found;
}

/* find=list: true when the pid lookup finds the same task (or none). */
static bool pm_same_as_pid_lookup(struct task_struct *task)
{
	struct task_struct *check = pm_find_by_pid();
	bool same = check == task;

	if (check)
		put_task_struct(check);
	return same;
}

/*
 * Find the task the way find= says and time that lookup into c->find_ns.
 * Returns a referenced task, or NULL with *err set and an error printed.
 */
static struct task_struct *pm_find_task(struct pm_ctx *c, int *err)
{
	struct task_struct *task;
	u64 start = ktime_get_ns();

	if (pm_find_mode == PM_FIND_LIST)
		task = pm_find_by_list();
	else
		task = pm_find_by_pid();
	c->find_ns = ktime_get_ns() - start;

	if (pm_find_mode == PM_FIND_LIST && !pm_same_as_pid_lookup(task)) {
		if (task)
			put_task_struct(task);
		*err = -ESRCH;
		pm_error(*err, "find_mismatch");
		return NULL;
	}
	if (!task) {
		*err = -ESRCH;
		pm_error(*err, "no_such_process");
	}
	return task;
}

/* Reference the mm of task; on failure returns NULL and sets *err. */
static struct mm_struct *pm_get_mm(struct task_struct *task, int *err)
{
	struct mm_struct *mm;

	if (task->flags & PF_KTHREAD) {
		*err = -EINVAL;
		pm_error(*err, "kernel_thread_has_no_user_memory");
		return NULL;
	}
	mm = get_task_mm(task);
	if (!mm) {
		*err = -ESRCH;
		pm_error(*err, "process_exited_no_mm");
	}
	return mm;
}

static void pm_ctx_init(struct pm_ctx *c, struct mm_struct *mm)
{
	BUILD_BUG_ON(PM_PTE_SHIFT != PAGE_SHIFT);
	c->mm = mm;
	c->pgd = (const u64 *)mm->pgd;
	c->l5 = pm_l5_enabled();
	c->top_shift = c->l5 ? PM_TOP_SHIFT_L5 : PM_TOP_SHIFT_L4;
	c->pti = pm_pti_enabled();
	c->zero_pfn = page_to_pfn(ZERO_PAGE(0));
}

/*
 * Close the record: an error when lines were dropped (the buffer reached
 * PM_BUF_MAX, or could not grow), then end with the count of lines kept.
 * Both use the buffer's reserve.
 */
static void pm_finish(void)
{
	struct pm_buf *b = &pm_out;

	if (b->dropped)
		pm_append(true, "error tag=%s pid=%d errno=%d reason=%s dropped=%u",
			  pm_tag, pid, b->nomem ? -ENOMEM : -EFBIG,
			  b->nomem ? "out_of_memory" : "record_too_large",
			  b->dropped);
	pm_append(true, "end tag=%s pid=%d records=%u", pm_tag, pid,
		  b->lines + 1);
}

/*
 * The report of the task, begin to end, or one error record. The mm is
 * held by mm_users (get_task_mm()), so a target that exits meanwhile keeps
 * its address space until mmput() below and the report stays consistent;
 * one that has exited already has no mm (process_exited_no_mm).
 */
static void pm_collect_task(struct pm_ctx *c)
{
	struct task_struct *task;
	int err;

	task = pm_find_task(c, &err);
	if (!task)
		return;
	c->mm = pm_get_mm(task, &err);
	if (!c->mm)
		goto out_task;

	pm_ctx_init(c, c->mm);
	/* A fatal signal ends the wait (e.g. a writer holds it for long). */
	if (pm_mmap_read_lock_killable(c->mm)) {
		pm_error(-EINTR, "interrupted");
		goto out_mm;
	}
	pm_print_begin(c, task);
	pm_report(c);
	pm_mmap_read_unlock(c->mm);
	pm_finish();
out_mm:
	mmput(c->mm);
out_task:
	put_task_struct(task);
}

static void pm_collect(void)
{
	struct pm_ctx *c;

	if (pm_check_params())
		return;
	c = kzalloc(sizeof(*c), GFP_KERNEL);
	if (!c) {
		pm_error(-ENOMEM, "out_of_memory");
		return;
	}
	pm_collect_task(c);
	kfree(c);
}

/* printk every collected line, with no lock held; errors at KERN_ERR. */
static void pm_print_lines(const struct pm_buf *b)
{
	static const char err[] = PM_PREFIX "error ";
	const char *line = b->data;
	const char *end = b->data + b->len;
	const char *nl;

	for (; line < end; line = nl + 1) {
		nl = memchr(line, '\n', end - line);
		if (!nl)
			break;
		/* The line carries the prefix already: printk, not pr_*(). */
		if (!strncmp(line, err, sizeof(err) - 1))
			printk(KERN_ERR "%.*s\n", (int)(nl - line), line);
		else
			printk(KERN_INFO "%.*s\n", (int)(nl - line), line);
		cond_resched();
	}
}

static ssize_t pm_proc_read(struct file *file, char __user *ubuf,
			    size_t count, loff_t *ppos)
{
	return simple_read_from_buffer(ubuf, count, ppos, pm_out.data,
				       pm_out.len);
}

/*
 * Load: collect the record (errors included), publish it in /proc/procmem,
 * print it. Init returns 0 whatever the record says, so that the file
 * stays until rmmod; it fails only when the record cannot be kept (no
 * buffer, no proc file), and then frees everything it took.
 */
static int __init procmem_init(void)
{
	int err;

	err = pm_buf_init(&pm_out);
	if (err) {
		pr_err("error tag=- pid=%d errno=%d reason=out_of_memory\n",
		       pid, err);
		return err;
	}
	pm_tag_trunc = pm_escape(pm_tag, (tag && *tag) ? tag : "-");
	pm_collect();

	pm_proc = pm_proc_create("procmem");
	pm_print_lines(&pm_out);
	if (!pm_proc) {
		pr_err("error tag=%s pid=%d errno=%d reason=proc_create_failed\n",
		       pm_tag, pid, -ENOMEM);
		pm_buf_free(&pm_out);
		return -ENOMEM;
	}
	return 0;
}

static void __exit procmem_exit(void)
{
	proc_remove(pm_proc);	/* waits for readers still in pm_proc_read() */
	pm_buf_free(&pm_out);
	pr_info("unload tag=%s\n", pm_tag);
}

module_init(procmem_init);
module_exit(procmem_exit);

MODULE_LICENSE("GPL");
MODULE_AUTHOR("procmem authors");
MODULE_DESCRIPTION("Print the memory layout and page tables of a process");
