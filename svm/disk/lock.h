/* Image locking: every disk file is locked while it is open, shared for readers, exclusive
 * for writers, with open file description locks (F_OFD_SETLK), as QEMU's image locking does.
 * OFD locks belong to the open file, not the process: they survive fork, are released when the
 * last descriptor of that open file closes (also after kill -9), and two opens in one process
 * conflict like two processes do. svmd, svm-convert and every tool built on svm/ take them; a
 * conflicting holder is refused with a message naming the file and what to do.
 *
 * Within one process the same image may be open several times: a live move builds the new
 * stack over the file before it frees the old one. Locks are between processes, so a process
 * takes the file's OFD lock once, on a duplicate descriptor it keeps, counts its opens, and
 * releases the lock when the last one is unlocked (svm_disk_unlock). A writer's open upgrades a
 * shared lock held by this process, if no other process reads the file.
 *
 * On a file system without OFD locks (the fcntl says EINVAL, ENOLCK or EOPNOTSUPP) the file
 * is used unlocked, as QEMU does. */
#ifndef SVM_DISK_LOCK_H
#define SVM_DISK_LOCK_H

#include <stdbool.h>

/* Lock the whole of fd's file: exclusive (fd open for writing) or shared. 0, or -EBUSY with
 * svm_error set ("PATH: another process (svmd or svm-convert) holds a write lock on it (svmd,
 * pid 1234): stop ..."; the holder is named when /proc shows it), or another -errno. Released
 * when fd's open file is closed. */
int svm_disk_lock(int fd, const char *path, bool exclusive);

/* Give back one svm_disk_lock() of fd's file (call before closing fd; nothing happens for a
 * file this process did not lock). */
void svm_disk_unlock(int fd);

#endif
