#!/usr/bin/env bash
# Render build step of the web service: install the runtime requirements and collect static files.
# Migrations run in the web service's preDeployCommand (render.yaml), once per deploy, not here.
set -o errexit
pip install --upgrade pip
pip install -r requirements.txt
python manage.py collectstatic --no-input
