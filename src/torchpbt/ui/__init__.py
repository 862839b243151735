"""What a person sees: the command line, the live console display, the HTML report and
its figures, the web dashboard."""
