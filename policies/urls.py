from django.urls import path

from policies import masking_views, views

app_name = "policies"

urlpatterns = [
    path("", views.policy_list, name="list"),
    path("new/", views.policy_create, name="create"),
    path("import/", views.policy_import, name="import"),
    path("<int:pk>/", views.policy_detail, name="detail"),
    path("<int:pk>/settings/", views.policy_settings, name="settings"),
    path("<int:pk>/rules/new/", views.rule_add, name="rule_add"),
    path("<int:pk>/rules/<int:index>/", views.rule_edit, name="rule_edit"),
    path("<int:pk>/rules/<int:index>/delete/", views.rule_delete, name="rule_delete"),
    path("<int:pk>/rules/<int:index>/move/", views.rule_move, name="rule_move"),
    path("<int:pk>/try/", views.policy_try, name="try"),
    path("<int:pk>/versions/", views.version_list, name="versions"),
    path("<int:pk>/versions/<int:number>/", views.version_detail, name="version"),
    path("<int:pk>/versions/<int:number>/rollback/", views.version_rollback, name="rollback"),
    path("<int:pk>/export/", views.policy_export, name="export"),
    path("<int:pk>/delete/", views.policy_delete, name="delete"),
    path("masking/", masking_views.masking_list, name="masking_list"),
    path("masking/new/", masking_views.masking_create, name="masking_create"),
    path("masking/<int:pk>/", masking_views.masking_detail, name="masking_detail"),
    path("masking/<int:pk>/edit/", masking_views.masking_edit, name="masking_edit"),
    path("masking/<int:pk>/try/", masking_views.masking_try, name="masking_try"),
    path("masking/<int:pk>/sample/", masking_views.masking_sample, name="masking_sample"),
    path("masking/<int:pk>/delete/", masking_views.masking_delete, name="masking_delete"),
]
