# The asynchronous disk I/O engine (io_uring default, libaio fallback).
target_sources(svmotion PRIVATE
  ${CMAKE_CURRENT_LIST_DIR}/io.c
  ${CMAKE_CURRENT_LIST_DIR}/io-uring.c
  ${CMAKE_CURRENT_LIST_DIR}/io-aio.c)
