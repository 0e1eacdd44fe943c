"""Easel: a Discord bot for AI image generation."""
