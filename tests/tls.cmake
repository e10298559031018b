# The TLS module (nfc/tls.c) and its test credentials (nfc/x509.c): a socketpair, both ends in
# the test; the bulk case runs a writer thread.
svm_unit_test(test-tls SOURCES unit/test-tls.c LIBS svmnfc)
set_tests_properties(test-tls PROPERTIES LABELS threads)
