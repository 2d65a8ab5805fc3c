"""`git push` straight to mirage-git: bare repositories, their hooks, and what a pusher sees.

The web app serves `/git/<app>.git` through `git http-backend` (see `web.git_http`); the
hooks installed by `barerepos` turn each pushed branch into the usual deploy or teardown
job and stream its log back as `remote:` lines (see `hook`).
"""
