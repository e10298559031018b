# Sanitizer builds. ASan + UBSan for the whole tree (CI runs the full suite once this way);
# TSan for the tests that run threads (CI runs the tests labelled "threads" in build-tsan).
# TSan cannot share a process with ASan (both own the shadow memory), hence two options that
# exclude each other.
if(SVM_SANITIZE AND SVM_TSAN)
  message(FATAL_ERROR "SVM_SANITIZE (ASan+UBSan) and SVM_TSAN exclude each other: "
                      "configure a separate build tree for each")
endif()

if(SVM_SANITIZE)
  add_compile_options(-fsanitize=address,undefined -fno-omit-frame-pointer
                      -fno-sanitize-recover=undefined)
  add_link_options(-fsanitize=address,undefined)
endif()

if(SVM_TSAN)
  add_compile_options(-fsanitize=thread -fno-omit-frame-pointer)
  add_link_options(-fsanitize=thread)
endif()
