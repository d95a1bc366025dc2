# The HTTP listener (issue 15): the daemon's metrics, status page and
# JSON APIs, hostile clients; read by a real Prometheus and a headless
# Chromium (Debian's prometheus and chromium packages).
add_e2e(e2e_http ${CMAKE_CURRENT_LIST_DIR}/test_http.py 300)
add_e2e(e2e_http_prometheus ${CMAKE_CURRENT_LIST_DIR}/test_http_prometheus.py
  300)
add_e2e(e2e_http_chromium ${CMAKE_CURRENT_LIST_DIR}/test_http_chromium.py 300)
