import { defineConfig } from 'vite'
import vue from '@vitejs/plugin-vue'

// The build goes where the Go binary embeds it (internal/webui).
export default defineConfig({
  plugins: [vue()],
  build: { outDir: '../internal/webui/ui/app', emptyOutDir: true },
  server: { proxy: { '/api': { target: 'http://127.0.0.1:8080', ws: true } } },
  test: { environment: 'jsdom' },
})
