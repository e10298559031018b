/* What a file is, for messages: "a FIFO", "a directory", ... (from st_mode). */
#ifndef SVM_COMMON_FILEKIND_H
#define SVM_COMMON_FILEKIND_H

#include <sys/stat.h>

static inline const char *svm_file_kind(mode_t m)
{
  return S_ISREG(m)    ? "a regular file"
         : S_ISDIR(m)  ? "a directory"
         : S_ISFIFO(m) ? "a FIFO"
         : S_ISSOCK(m) ? "a socket"
         : S_ISBLK(m)  ? "a block device"
         : S_ISCHR(m)  ? "a character device"
         : S_ISLNK(m)  ? "a symbolic link"
                       : "not a regular file";
}

#endif
