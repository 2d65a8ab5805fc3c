/bin/busybox mkdir -p /bin /tmp
/bin/busybox --install -s /bin
exec /bin/busybox httpd -f -p 8080 -h /www
