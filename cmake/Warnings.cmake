# Warnings every target gets; CI adds -Werror through SVM_WERROR=ON.
add_compile_options(-Wall -Wextra -Wshadow -Wvla -Wno-unused-parameter
                    -Wmissing-prototypes -Wstrict-prototypes -Wformat=2)
if(SVM_WERROR)
  add_compile_options(-Werror)
endif()
