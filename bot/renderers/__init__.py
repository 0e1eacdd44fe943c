"""Renderers turn a RenderRequest into images; they never touch Discord."""
