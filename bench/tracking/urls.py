from django.urls import path

from bench.tracking.baseline import bare_pixel_view
from OreeStats.urls import urlpatterns as project_urlpatterns

urlpatterns = [path("bench/bare/open.png", bare_pixel_view), *project_urlpatterns]
