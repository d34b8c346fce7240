"""standby.i18n."""
