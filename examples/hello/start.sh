# Writes a page that says which branch and commit this is, then serves it.
/bin/busybox mkdir -p /bin /tmp
/bin/busybox --install -s /bin
cat > /www/index.html <<HTML
<!doctype html>
<html><head><meta charset="utf-8"><title>hello · $GIT_BRANCH</title>
<style>body{font:18px/1.5 system-ui,sans-serif;margin:3rem auto;max-width:40rem;color:#1d2330}
code{background:#eef0f3;padding:.1em .3em;border-radius:4px}</style></head>
<body>
<h1>${GREETING:-Hello} from <code>$GIT_BRANCH</code></h1>
<p>Commit <code>$GIT_COMMIT</code> of <code>$MIRAGE_APP</code>, served at <a href="$MIRAGE_URL">$MIRAGE_URL</a>.</p>
<p>Every branch you push gets its own copy of this page at its own hostname.</p>
<p>See <a href="/cgi-bin/env">/cgi-bin/env</a> for the container's environment.</p>
</body></html>
HTML
exec /bin/busybox httpd -f -p "${PORT:-8080}" -h /www
