// SPDX-License-Identifier: GPL-2.0
/*
 * hello - step 1 of the assignment: the smallest loadable module.
 *
 * Load with: insmod hello.ko [whom=NAME] [times=N]
 *
 * Every line is one record, "hello: <record> key=value ...", like the
 * records of procmem (see ../README.md, Step 1):
 *
 *   hello: init whom=world times=1
 *   hello: hello whom=world n=1          (times lines, n = 1 .. times)
 *   hello: exit whom=world               (on rmmod)
 *   hello: error errno=-22 reason=R      (insmod then fails)
 */

#define pr_fmt(fmt) "hello: " fmt

#include <linux/module.h>
#include <linux/moduleparam.h>
#include <linux/kernel.h>
#include <linux/init.h>
#include <linux/errno.h>
#include <linux/string.h>

#define HELLO_WHOM_MAX	64
#define HELLO_TIMES_MAX	100

static char *whom = "world";
module_param(whom, charp, 0444);
MODULE_PARM_DESC(whom, "who to greet: 1 to 64 printable characters, no spaces (default \"world\")");

static int times = 1;
module_param(times, int, 0444);
MODULE_PARM_DESC(times, "how many hello lines to print, 1 to 100 (default 1)");

/* True when whom prints as one key=value field: no spaces, no control bytes. */
static bool hello_whom_ok(void)
{
	const unsigned char *s = (const unsigned char *)whom;
	size_t len = whom ? strlen(whom) : 0;

	if (len == 0 || len > HELLO_WHOM_MAX)
		return false;
	for (; *s; s++)
		if (*s <= 0x20 || *s >= 0x7f)
			return false;
	return true;
}

static int hello_error(const char *reason)
{
	pr_err("error errno=%d reason=%s\n", -EINVAL, reason);
	return -EINVAL;
}

static int __init hello_init(void)
{
	int i;

	if (!hello_whom_ok())
		return hello_error("bad_whom");
	if (times < 1 || times > HELLO_TIMES_MAX)
		return hello_error("bad_times");

	pr_info("init whom=%s times=%d\n", whom, times);
	for (i = 1; i <= times; i++)
		pr_info("hello whom=%s n=%d\n", whom, i);
	return 0;
}

static void __exit hello_exit(void)
{
	pr_info("exit whom=%s\n", whom);
}

module_init(hello_init);
module_exit(hello_exit);

MODULE_LICENSE("GPL");
MODULE_AUTHOR("memlayout");
MODULE_DESCRIPTION("Hello World: step 1 of the memory layout assignment");
