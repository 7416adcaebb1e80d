# The deployment's worker model (gunicorn.conf.py: gthread), without the access log.
workers = 2
threads = 4
worker_class = "gthread"
keepalive = 5
accesslog = None
errorlog = "-"
loglevel = "warning"
